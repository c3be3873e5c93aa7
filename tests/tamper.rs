//! Requests altered in flight are refused, never reinterpreted (issue 9, defect 4).
