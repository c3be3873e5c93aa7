//! The whole configuration is checked before the token is opened (issue 9, defect 6 and 7).
