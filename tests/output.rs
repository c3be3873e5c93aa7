//! `create --out` writes to what the user named (issue 9, defect 5), and `batch` fails only the lines it cannot read.
