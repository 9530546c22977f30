"""Analysis: profiler, bench, fit-to-budget, reports. Uses export, optimize and runtime; nothing below imports it."""
