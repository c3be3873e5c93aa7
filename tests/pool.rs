//! Pool keys are told apart by something no caller can produce (issue 9, defect 1).
