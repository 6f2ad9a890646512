//! Small durable-file helpers: checksummed values replaced atomically, directory
//! syncs, and the mapping of I/O failures to openraft's storage errors.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::StorageError;

/// Makes a directory's entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and its parents) and makes the new entry durable.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `path` with `bytes`, atomically and durably: a crash leaves either the old
/// or the new contents, never a mix (write a temporary file, sync it, rename it over,
/// sync the directory).
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Writes `value` as `[crc32c: u32 LE][postcard]` with [`replace_file`].
pub fn store_value<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let body = postcard::to_allocvec(value).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(body.len() + 4);
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    replace_file(path, &bytes)
}

/// Reads a value written by [`store_value`]; `None` when the file does not exist. A
/// checksum mismatch is an error: the file is only ever replaced atomically, so it
/// means the disk corrupted it.
pub fn load_value<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let corrupt = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: corrupt", path.display()),
        )
    };
    let (crc, body) = bytes.split_at_checked(4).ok_or_else(corrupt)?;
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| corrupt())?);
    if crc != crc32c::crc32c(body) {
        return Err(corrupt());
    }
    postcard::from_bytes(body).map(Some).map_err(|_| corrupt())
}

/// A storage error about the log (openraft treats it as fatal and stops the node).
pub fn log_error(e: io::Error) -> StorageError {
    openraft::StorageIOError::write_logs(openraft::AnyError::new(&e)).into()
}

/// A storage error about the vote.
pub fn vote_error(e: io::Error) -> StorageError {
    openraft::StorageIOError::write_vote(openraft::AnyError::new(&e)).into()
}

/// A storage error about the state machine or its snapshots.
pub fn state_machine_error(e: io::Error) -> StorageError {
    openraft::StorageIOError::write_state_machine(openraft::AnyError::new(&e)).into()
}

/// An `InvalidData` I/O error with a message.
pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
