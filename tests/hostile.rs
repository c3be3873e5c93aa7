//! A hostile client against the real server: malformed, oversized, duplicated, reordered and slow requests (issue 9).
