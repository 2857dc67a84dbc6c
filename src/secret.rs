//! Reading secrets (private keys, passwords) from files or the environment.
//!
//! Its one job is to refuse what ssh would refuse: a secret file readable by group or
//! others. It never logs or formats a secret's content; errors name the path only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` readable by its owner only (mode 0600), replacing what was
/// there: created anew, so an old file's looser mode never carries over.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

/// Why a secret could not be read. Messages name the file or variable, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: cannot read secret: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: secret file is readable by group or others (mode {mode:o}); run: chmod 600 {path}"
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("{path}: is a directory or other non-file; a secret (key or password) must be a regular file")]
    NotAFile { path: PathBuf },
    #[error("environment variable {name} is not set or not UTF-8")]
    MissingEnv { name: String },
}

/// Checks that `path` exists and is not group- or world-accessible.
pub fn check_secret_file(path: &Path) -> Result<(), SecretError> {
    let meta = std::fs::metadata(path).map_err(|source| SecretError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::LoosePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads a secret file after [`check_secret_file`].
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    check_secret_file(path)?;
    std::fs::read(path).map_err(|source| SecretError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a password from a file (first line, trailing newline removed).
pub fn read_password_file(path: &Path) -> Result<String, SecretError> {
    let bytes = read_secret_file(path)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Reads a password from an environment variable.
pub fn read_password_env(name: &str) -> Result<String, SecretError> {
    std::env::var(name).map_err(|_| SecretError::MissingEnv {
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_group_readable_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_secret_file(&p).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap(), b"x");
    }

    #[test]
    fn a_directory_is_not_a_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o700, 0o755] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = check_secret_file(dir.path()).unwrap_err().to_string();
            assert!(err.contains("regular file"), "{err}");
            assert!(
                !err.contains("chmod"),
                "no chmod advice for a directory: {err}"
            );
        }
    }
}
