//! Owner-only modes for what the server keeps on local disk: the data dir 0700, the SQLite
//! database (with its `-wal` / `-shm`), blob folder and generated keys 0600 / 0700. The database
//! holds the token signing keys and every account, so a readable file let any local user mint
//! tokens for any player. Every start also tightens an existing install's modes.

use std::io;
use std::path::Path;

/// Secrets the server generates into the data dir.
const KEY_FILES: [&str; 3] = [
    "default-project-key",
    "default-server-key",
    "save-encryption-key",
];

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Creates `dir` (with parents) and makes it owner-only.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Makes `path` owner-only if it exists.
pub fn restrict_if_exists(path: &Path) -> io::Result<()> {
    match set_mode(path, 0o600) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The data dir, owner-only, and its key files (of installs from before) too.
pub fn secure_data_dir(dir: &Path) -> io::Result<()> {
    private_dir(dir)?;
    for name in KEY_FILES {
        restrict_if_exists(&dir.join(name))?;
    }
    Ok(())
}

/// Creates the SQLite file at `path` owner-only before SQLite opens it (SQLite gives `-wal` and
/// `-shm` the main file's mode), and tightens the three files of an existing database.
pub fn secure_sqlite_file(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?;
    restrict_if_exists(path)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        restrict_if_exists(Path::new(&side))?;
    }
    Ok(())
}

/// Writes a new secret file, owner-only from its creation on.
pub fn write_secret(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())?;
    restrict_if_exists(path)
}
