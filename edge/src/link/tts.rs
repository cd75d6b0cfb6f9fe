//! Rendering `text` announcements to WAV with the configured speech command
//! (`ivr.speech_command`).
//!
//! The command line is split on whitespace and run without a shell. The announcement's text
//! is written to the child's **standard input** (then closed), never passed as an argument:
//! no quoting problems, no text that starts with `-` read as an option, no argument-length
//! limit. The child writes a WAV file to its standard output. For espeak-ng that is
//! `espeak-ng --stdout --stdin` (`--stdin` reads the whole text at once; without it espeak-ng
//! reads standard input line by line, which also works).
//!
//! Bounds: the child is killed after [`SPEECH_TIMEOUT`] or as soon as its output passes the
//! audio size limit. A WAV written to a pipe cannot have its sizes filled in afterwards
//! (espeak-ng leaves placeholders), so [`fix_streamed_wav`] sets the RIFF and `data` sizes
//! from the bytes actually received before the result is decoded and stored.
//!
//! Everything here blocks; the link calls it from a blocking thread.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The longest a speech command may run.
pub(crate) const SPEECH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TtsError {
    /// The command line is empty.
    #[error("the speech command is empty")]
    Empty,
    /// The program could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran longer than [`SPEECH_TIMEOUT`].
    #[error("the speech command took longer than {} s and was killed", SPEECH_TIMEOUT.as_secs())]
    Timeout,
    /// Its output passed the audio size limit.
    #[error("the speech command wrote more than {0} bytes and was killed")]
    TooLarge(u64),
    /// It exited with a failure.
    #[error("the speech command failed ({0})")]
    Failed(String),
}

/// Runs `command` with `text` on its standard input and returns its standard output (with
/// the WAV sizes fixed), bounded by `timeout` and `max_bytes`.
///
/// # Errors
/// [`TtsError`] when the command cannot run, fails, or passes a bound.
pub(crate) fn render(
    command: &str,
    text: &str,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Vec<u8>, TtsError> {
    let mut words = command.split_whitespace();
    let program = words.next().ok_or(TtsError::Empty)?;
    let mut child = Command::new(program)
        .args(words)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| TtsError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    let stdin = child.stdin.take();
    let text = text.to_owned();
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A child that exits without reading all of it is not an error here.
            let _ = stdin.write_all(text.as_bytes());
        }
    });
    let (done_tx, done_rx) = mpsc::channel();
    let reader = child.stdout.take().map(|stdout| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let r = stdout
                .take(max_bytes.saturating_add(1))
                .read_to_end(&mut out);
            let _ = done_tx.send(r.map(|_| out));
        })
    });
    let outcome = match done_rx.recv_timeout(timeout) {
        Ok(Ok(out)) if out.len() as u64 > max_bytes => Err(TtsError::TooLarge(max_bytes)),
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(TtsError::Failed(format!("reading its output: {e}"))),
        Err(_) => Err(TtsError::Timeout),
    };
    let status = if outcome.is_ok() {
        wait_bounded(&mut child, timeout)
    } else {
        None
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // The reader has finished (it sent its result); the writer ends with the child's stdin.
    // Neither is joined on failure: a grandchild holding the pipes must not block us.
    drop(reader);
    if status.is_some() {
        let _ = writer.join();
    }
    let out = outcome?;
    match status {
        Some(s) if s.success() => Ok(fix_streamed_wav(out)),
        Some(s) => Err(TtsError::Failed(s.to_string())),
        None => Err(TtsError::Timeout),
    }
}

/// Waits for the child's exit for at most `timeout`.
fn wait_bounded(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if waited < timeout => {
                std::thread::sleep(step);
                waited += step;
            }
            _ => return None,
        }
    }
}

/// Sets the RIFF size and the size of a final `data` chunk that claims more bytes than are
/// present (a WAV streamed to a pipe). Anything else is returned unchanged; the decoder
/// judges the result.
pub(crate) fn fix_streamed_wav(mut wav: Vec<u8>) -> Vec<u8> {
    if wav.len() < 12 || &wav[0..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return wav;
    }
    let len = wav.len();
    let mut pos = 12usize;
    while let Some(header) = wav.get(pos..pos + 8) {
        let id = [header[0], header[1], header[2], header[3]];
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let body = pos + 8;
        if &id == b"data" {
            let present = len - body;
            if size > present {
                let fixed = present & !1; // whole 16-bit samples, even chunk size
                wav.truncate(body + fixed);
                let fixed32 = u32::try_from(fixed).unwrap_or(u32::MAX);
                wav[pos + 4..pos + 8].copy_from_slice(&fixed32.to_le_bytes());
                let riff = u32::try_from(wav.len() - 8).unwrap_or(u32::MAX);
                wav[4..8].copy_from_slice(&riff.to_le_bytes());
            }
            return wav;
        }
        let Some(next) = body.checked_add(size).and_then(|n| n.checked_add(size & 1)) else {
            return wav;
        };
        pos = next;
    }
    wav
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed_wav(samples: usize) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(b"RIFF");
        w.extend_from_slice(&0x7fff_f024u32.to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes()); // PCM
        w.extend_from_slice(&1u16.to_le_bytes()); // mono
        w.extend_from_slice(&8000u32.to_le_bytes());
        w.extend_from_slice(&16000u32.to_le_bytes());
        w.extend_from_slice(&2u16.to_le_bytes());
        w.extend_from_slice(&16u16.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&0x7fff_f000u32.to_le_bytes());
        for i in 0..samples {
            let s = i16::try_from((i % 64) * 100).unwrap_or(0);
            w.extend_from_slice(&s.to_le_bytes());
        }
        w
    }

    #[test]
    fn streamed_sizes_are_fixed_and_decodable() {
        let raw = streamed_wav(8000);
        assert!(crate::media::audio::decode_wav(&raw).is_err());
        let fixed = fix_streamed_wav(raw.clone());
        assert_eq!(fixed.len(), raw.len());
        assert_eq!(
            &fixed[4..8],
            &(u32::try_from(raw.len() - 8).unwrap()).to_le_bytes()
        );
        assert_eq!(&fixed[40..44], &16000u32.to_le_bytes());
        let pcm = crate::media::audio::decode_wav(&fixed).unwrap();
        assert_eq!(pcm.len(), 8000);
        // Not a WAV, or too short: unchanged, no panic.
        for junk in [
            Vec::new(),
            b"RIFF".to_vec(),
            vec![0u8; 100],
            raw[..30].to_vec(),
        ] {
            assert_eq!(fix_streamed_wav(junk.clone()), junk);
        }
    }

    #[test]
    fn text_goes_to_stdin_and_bounds_hold() {
        // `cat` echoes its stdin: the text arrives there, not as an argument.
        let out = render("cat", "-v hello", 1000, Duration::from_secs(5)).unwrap();
        assert_eq!(out, b"-v hello");
        assert!(matches!(
            render("cat", &"x".repeat(5000), 100, Duration::from_secs(5)),
            Err(TtsError::TooLarge(100))
        ));
        assert!(matches!(
            render("sleep 5", "", 100, Duration::from_millis(200)),
            Err(TtsError::Timeout)
        ));
        assert!(matches!(
            render("false", "", 100, Duration::from_secs(5)),
            Err(TtsError::Failed(_))
        ));
        assert!(matches!(
            render("/nonexistent/tts", "", 100, Duration::from_secs(5)),
            Err(TtsError::Spawn { .. })
        ));
        assert!(matches!(
            render("  ", "", 100, Duration::from_secs(5)),
            Err(TtsError::Empty)
        ));
    }

    #[test]
    fn espeak_ng_renders_a_playable_wav_when_installed() {
        if !std::path::Path::new("/usr/bin/espeak-ng").exists() {
            return;
        }
        let wav = render(
            "espeak-ng --stdout --stdin",
            "We are aware of an outage.",
            16 << 20,
            SPEECH_TIMEOUT,
        )
        .unwrap();
        let pcm = crate::media::audio::decode_wav(&wav).unwrap();
        assert!(pcm.len() > 4000, "{} samples", pcm.len());
    }
}
