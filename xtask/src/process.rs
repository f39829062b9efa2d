//! Running commands with readable errors.

use std::process::Command;

use crate::error::XtaskError;

/// Runs `cmd` to completion; a non-zero exit is an error carrying `hint`.
pub fn run(cmd: &mut Command, hint: &str) -> Result<(), XtaskError> {
    let line = format!("{cmd:?}");
    let status = cmd.status().map_err(|source| XtaskError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(XtaskError::Failed {
            cmd: line,
            status,
            hint: hint.to_string(),
        })
    }
}
