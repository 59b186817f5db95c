"""A script for `memlens run --line examples/line_demo.py`."""


@profile  # noqa: F821 -- a builtin under `memlens run --line`
def my_func():
    a = [1] * (10 ** 6)
    b = [2] * (2 * 10 ** 7)
    del b
    return a


if __name__ == "__main__":
    my_func()
