"""The C units, one test file each: tests/core/test_<unit>.py for csrc/<unit>.c."""
