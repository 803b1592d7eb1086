//! Reading JSONL events: plain or gzip (told apart by the magic bytes, not the name), line by
//! line into a reused buffer, with a progress bar on stderr for big files.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use anyhow::Context;
use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Files smaller than this get no progress bar.
const PROGRESS_MIN_BYTES: u64 = 4 * 1024 * 1024;
const BUFFER: usize = 256 * 1024;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

pub struct Lines {
    reader: Box<dyn BufRead + Send>,
    progress: ProgressBar,
    line: u64,
    gzip: bool,
}

impl Lines {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path)
            .with_context(|| format!("cannot open events file {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("cannot read events file {}", path.display()))?
            .len();
        let progress = if len >= PROGRESS_MIN_BYTES {
            // Hidden by indicatif when stderr is not a terminal.
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} reading {msg} [{bar:32}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(
                path.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut raw = BufReader::with_capacity(BUFFER, progress.wrap_read(file));
        let head = raw
            .fill_buf()
            .with_context(|| format!("cannot read events file {}", path.display()))?;
        let gzip = head.starts_with(&GZIP_MAGIC);
        let reader: Box<dyn BufRead + Send> = if gzip {
            Box::new(BufReader::with_capacity(BUFFER, MultiGzDecoder::new(raw)))
        } else {
            Box::new(raw)
        };
        Ok(Lines {
            reader,
            progress,
            line: 0,
            gzip,
        })
    }

    /// Reads the next line (with its newline, if any) into `buf`, replacing its contents.
    /// Returns `false` at the end of the input.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        if self.reader.read_until(b'\n', buf)? == 0 {
            return Ok(false);
        }
        self.line += 1;
        Ok(true)
    }

    /// 1-based number of the line last read.
    pub fn line_number(&self) -> u64 {
        self.line
    }

    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// The progress bar (a cheap handle), for printing around it from another thread with
    /// [`ProgressBar::suspend`] and clearing it at the end.
    pub fn progress(&self) -> ProgressBar {
        self.progress.clone()
    }
}
