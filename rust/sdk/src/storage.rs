//! Local files: atomic writes, the per-user save cache and the on-disk offline queue.
//!
//! Layout under `data_dir/users/<user id>/`:
//! - `slots/<slot>.save`: the newest local copy of a slot: one JSON header line, then the encoded
//!   data bytes.
//! - `pending/<seq>.entry`: one queued upload per local write, same shape; `seq` (20 digits) orders
//!   the queue, so uploads happen in write order, also after a restart.
//!
//! Every file is written to a temporary name, fsynced, then renamed over the target (and the
//! directory fsynced), so a crash leaves either the old or the new file, never a torn one.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Writes `bytes` to `path` atomically; `private` makes the file readable by its owner only.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", rand::random::<u64>()));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        // Makes the rename itself durable.
        let _ = d.sync_all();
    }
    Ok(())
}

fn split_header<H: for<'de> Deserialize<'de>>(bytes: Vec<u8>) -> io::Result<(H, Vec<u8>)> {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no header line"))?;
    let header = serde_json::from_slice(&bytes[..newline])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((header, bytes[newline + 1..].to_vec()))
}

fn join_header<H: Serialize>(header: &H, data: &[u8]) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(header).expect("headers serialize");
    bytes.push(b'\n');
    bytes.extend_from_slice(data);
    bytes
}

/// What the SDK knows about one slot locally.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SlotHeader {
    pub slot: String,
    /// The server version this copy is based on (0 = none known): sent as `base_version`.
    pub server_version: i64,
    pub server_updated_at: i64,
    pub checksum: String,
    pub metadata: serde_json::Value,
    /// Unix ms of the last local write.
    pub local_written_at: i64,
    /// Queue sequence of the last local write; 0 when the copy came from the server.
    pub local_seq: u64,
    /// Local data not yet on the server.
    pub dirty: bool,
}

/// One queued upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PendingHeader {
    pub seq: u64,
    pub slot: String,
    pub metadata: serde_json::Value,
    pub written_at: i64,
}

/// One signed-in player's local files.
#[derive(Debug, Clone)]
pub(crate) struct UserStore {
    dir: PathBuf,
}

impl UserStore {
    pub fn new(data_dir: &Path, user_id: &str) -> Self {
        let safe: String = user_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            dir: data_dir.join("users").join(safe),
        }
    }

    fn slot_path(&self, slot: &str) -> PathBuf {
        self.dir.join("slots").join(format!("{slot}.save"))
    }

    fn pending_dir(&self) -> PathBuf {
        self.dir.join("pending")
    }

    fn pending_path(&self, seq: u64) -> PathBuf {
        self.pending_dir().join(format!("{seq:020}.entry"))
    }

    pub fn read_slot(&self, slot: &str) -> io::Result<Option<(SlotHeader, Vec<u8>)>> {
        match fs::read(self.slot_path(slot)) {
            Ok(bytes) => split_header(bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write_slot(&self, header: &SlotHeader, data: &[u8]) -> io::Result<()> {
        write_atomic(
            &self.slot_path(&header.slot),
            &join_header(header, data),
            false,
        )
    }

    pub fn remove_slot(&self, slot: &str) -> io::Result<()> {
        match fs::remove_file(self.slot_path(slot)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Queue sequence numbers in upload order.
    pub fn pending(&self) -> io::Result<Vec<u64>> {
        let mut seqs = Vec::new();
        let entries = match fs::read_dir(self.pending_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(seqs),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            if let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".entry"))
                .and_then(|n| n.parse().ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Writes the local copy first, then the queue entry: after a crash between the two the
    /// copy is dirty and [`UserStore::requeue_dirty`] re-creates the entry.
    pub fn record_local_write(
        &self,
        slot: &str,
        metadata: serde_json::Value,
        written_at: i64,
        data: &[u8],
    ) -> io::Result<u64> {
        let seq = self.pending()?.last().map_or(1, |s| s + 1);
        let previous = self.read_slot(slot)?.map(|(h, _)| h);
        let header = SlotHeader {
            slot: slot.to_owned(),
            server_version: previous.as_ref().map_or(0, |h| h.server_version),
            server_updated_at: previous.as_ref().map_or(0, |h| h.server_updated_at),
            checksum: String::new(),
            metadata: metadata.clone(),
            local_written_at: written_at,
            local_seq: seq,
            dirty: true,
        };
        self.write_slot(&header, data)?;
        let entry = PendingHeader {
            seq,
            slot: slot.to_owned(),
            metadata,
            written_at,
        };
        write_atomic(&self.pending_path(seq), &join_header(&entry, data), false)?;
        Ok(seq)
    }

    /// Re-queues dirty slots whose queue entry is missing (crash between the two writes).
    pub fn requeue_dirty(&self) -> io::Result<()> {
        let slots_dir = self.dir.join("slots");
        let Ok(entries) = fs::read_dir(&slots_dir) else {
            return Ok(());
        };
        let queued: Vec<u64> = self.pending()?;
        for entry in entries {
            let path = entry?.path();
            let Some(slot) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".save"))
            else {
                continue;
            };
            if let Some((header, data)) = self.read_slot(slot)? {
                if header.dirty && !queued.contains(&header.local_seq) {
                    self.record_local_write(slot, header.metadata, header.local_written_at, &data)?;
                }
            }
        }
        Ok(())
    }

    pub fn read_pending(&self, seq: u64) -> io::Result<(PendingHeader, Vec<u8>)> {
        split_header(fs::read(self.pending_path(seq))?)
    }

    pub fn remove_pending(&self, seq: u64) -> io::Result<()> {
        match fs::remove_file(self.pending_path(seq)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Slot names as the server accepts them; also keeps them safe as file names.
pub(crate) fn valid_slot(slot: &str) -> bool {
    !slot.is_empty()
        && slot.len() <= 64
        && slot
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && slot
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && slot != "history"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_survives_reopening_in_write_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::new(dir.path(), "user-1");
        let a = store
            .record_local_write("a", serde_json::json!({}), 10, b"{\"n\":1}")
            .unwrap();
        let b = store
            .record_local_write("b", serde_json::json!({"k": 1}), 11, b"2")
            .unwrap();
        let c = store
            .record_local_write("a", serde_json::json!({}), 12, b"3")
            .unwrap();
        assert!(a < b && b < c);

        let reopened = UserStore::new(dir.path(), "user-1");
        assert_eq!(reopened.pending().unwrap(), vec![a, b, c]);
        let (header, data) = reopened.read_pending(b).unwrap();
        assert_eq!(header.slot, "b");
        assert_eq!(header.metadata, serde_json::json!({"k": 1}));
        assert_eq!(data, b"2");
        let (slot, data) = reopened.read_slot("a").unwrap().unwrap();
        assert!(slot.dirty);
        assert_eq!(slot.local_seq, c);
        assert_eq!(data, b"3");

        reopened.remove_pending(a).unwrap();
        assert_eq!(reopened.pending().unwrap(), vec![b, c]);
        // A new entry is numbered after the newest one, never reusing a number.
        let d = reopened
            .record_local_write("c", serde_json::json!({}), 13, b"4")
            .unwrap();
        assert!(d > c);
    }

    #[test]
    fn dirty_copy_without_entry_is_requeued() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::new(dir.path(), "u");
        let seq = store
            .record_local_write("slot1", serde_json::json!({}), 5, b"[1]")
            .unwrap();
        // Simulates a crash after the copy was written but before the entry was.
        store.remove_pending(seq).unwrap();
        assert!(store.pending().unwrap().is_empty());
        store.requeue_dirty().unwrap();
        let queued = store.pending().unwrap();
        assert_eq!(queued.len(), 1);
        let (header, data) = store.read_pending(queued[0]).unwrap();
        assert_eq!(
            (header.slot.as_str(), data.as_slice()),
            ("slot1", &b"[1]"[..])
        );
        // Running it again does not duplicate the entry.
        store.requeue_dirty().unwrap();
        assert_eq!(store.pending().unwrap().len(), 1);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("file");
        write_atomic(&path, b"one", true).unwrap();
        write_atomic(&path, b"two", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn slot_names_are_checked_like_the_server() {
        for ok in ["slot1", "_a", "a.b-c", "A9"] {
            assert!(valid_slot(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "history",
            "-a",
            &"x".repeat(65),
        ] {
            assert!(!valid_slot(bad), "{bad}");
        }
    }
}
