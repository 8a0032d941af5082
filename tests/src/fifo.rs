//! FIFOs as containerd clients give them for a process's stdio.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

pub fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A client slow to read its stdout FIFO: it starts reading a while after the process has
/// run (so the supervisor's copy to the FIFO, and to the log, is held up until then), and
/// reads until the output ends with `last`.
pub fn slow_reader(fifo: PathBuf, last: &'static str) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut f = std::fs::File::open(&fifo).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(last.as_bytes()) {
            let n = f.read(&mut buf).unwrap();
            assert!(n > 0, "end of the FIFO before {last:?}");
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    })
}
