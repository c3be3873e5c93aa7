//! Slow and idle clients, connection limits and HTTP methods (issue 9, defect 3 and 7).
