//! `chainctl image build`: a container image holding only our own statically linked
//! binary, made with `docker import` from a one-file archive: no base image, no
//! builder, no registry.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// ELF program header type of the dynamic loader path; a static binary has none.
const PT_INTERP: u32 = 3;

/// Whether an ELF64 little-endian executable needs a dynamic loader, and which.
pub fn interpreter(path: &Path) -> Result<Option<String>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024 * 1024).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let not_elf = || {
        format!(
            "{} is not a 64-bit little-endian ELF executable",
            path.display()
        )
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(not_elf());
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    let (phoff, phentsize, phnum) = (
        u64_at(0x20).ok_or_else(not_elf)?,
        u16_at(0x36).ok_or_else(not_elf)?,
        u16_at(0x38).ok_or_else(not_elf)?,
    );
    for i in 0..phnum {
        let h = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or_else(not_elf)?;
        if u32_at(h).ok_or_else(not_elf)? == PT_INTERP {
            let (off, size) = (
                u64_at(h + 8).ok_or_else(not_elf)?,
                u64_at(h + 0x20).ok_or_else(not_elf)?,
            );
            let interp = off
                .checked_add(size)
                .and_then(|end| bytes.get(off..end))
                .ok_or_else(not_elf)?;
            return Ok(Some(
                String::from_utf8_lossy(interp)
                    .trim_end_matches('\0')
                    .to_string(),
            ));
        }
    }
    Ok(None)
}

/// The command that builds a static chainctl, for messages.
pub const STATIC_BUILD: &str =
    "RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu";

/// Builds image `tag` from `binary`; returns the image id.
pub fn build(binary: &Path, tag: &str) -> Result<String, String> {
    if let Some(interp) = interpreter(binary)? {
        return Err(format!(
            "{} is dynamically linked (it needs {interp}), so it cannot run in a FROM-scratch image: build a static one with `{STATIC_BUILD}` and run `target/x86_64-unknown-linux-gnu/release/chainctl image build`",
            binary.display()
        ));
    }
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    let data =
        std::fs::read(binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    header.set_size(data.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    archive
        .append_data(&mut header, "chainctl", data.as_slice())
        .map_err(|e| e.to_string())?;
    // An empty, world-writable-with-sticky-bit /tmp, as programs expect one.
    let mut tmp = tar::Header::new_gnu();
    tmp.set_entry_type(tar::EntryType::Directory);
    tmp.set_mode(0o1777);
    tmp.set_size(0);
    tmp.set_cksum();
    archive
        .append_data(&mut tmp, "tmp/", std::io::empty())
        .map_err(|e| e.to_string())?;
    let bytes = archive.into_inner().map_err(|e| e.to_string())?;
    let version = env!("CARGO_PKG_VERSION");
    let mut child = Command::new("docker")
        .args([
            "import",
            "--change",
            r#"ENTRYPOINT ["/chainctl"]"#,
            "--change",
            "USER 65532:65532",
            "--change",
            &format!("LABEL io.chainctl.version={version}"),
            "--message",
            &format!("chainctl {version}, static binary"),
            "-",
            tag,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run docker ({e}): install Docker and make sure `docker info` works")
        })?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&bytes)
            .map_err(|e| format!("docker import: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("docker import: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loader_of_a_dynamic_binary_and_rejects_non_elf() {
        // The test binary itself is a normal, dynamically linked build.
        let me = std::env::current_exe().unwrap();
        let interp = interpreter(&me).unwrap();
        assert!(
            interp.as_deref().is_some_and(|i| i.contains("ld-linux")),
            "{interp:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(interpreter(&f)
            .unwrap_err()
            .contains("not a 64-bit little-endian ELF"));
    }
}
