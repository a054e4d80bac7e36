//! Checks the hand-written FlatBuffers codec (src/wire.rs) against the real schema with Debian's
//! flatc, in both directions, and against the C++ FlatBuffers Verifier that the debra server uses
//! (flatc --cpp + libflatbuffers-dev + g++).

use std::path::{Path, PathBuf};
use std::process::Command;

use quinn_legacy_client::wire::{decode, encode, Message};

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/debra.fbs")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qlc-{}-{}", name, std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{:?}: {}", cmd, e));
    assert!(out.status.success(), "{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
}

fn samples() -> Vec<Message> {
    vec![
        Message::registration(1),
        Message::registration(2147483647),
        Message::client_to_client(1, 2, b"hello"),
        Message::client_to_client(42, 7, b""),
        Message::client_to_client(3, 4, "h\u{e9}llo \u{1f600}".as_bytes()),
        Message::client_to_client(5, 6, &(0..=255u8).collect::<Vec<_>>()),
    ]
}

/// The value after `"key": ` in flatc's --strict-json output (numbers, enum names, arrays).
fn json_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{}\": ", key))? + key.len() + 4;
    let rest = &json[start..];
    let end = if rest.starts_with('[') { rest.find(']')? + 1 } else { rest.find(|c| c == ',' || c == '\n')? };
    Some(rest[..end].trim())
}

#[test]
fn our_buffers_read_correctly_with_flatc() {
    let dir = tmpdir("tojson");
    for (i, m) in samples().iter().enumerate() {
        let bin = dir.join(format!("m{}.bin", i));
        std::fs::write(&bin, encode(m)).unwrap();
        run(Command::new("flatc")
            .args(["--json", "--strict-json", "--defaults-json", "--raw-binary", "-o"])
            .arg(&dir)
            .arg(schema())
            .arg("--")
            .arg(&bin));
        let json = std::fs::read_to_string(dir.join(format!("m{}.json", i))).unwrap();
        let kind = if m.message_type == 0 { "\"ClientRegistration\"" } else { "\"ClientToClient\"" };
        assert_eq!(json_value(&json, "message_type"), Some(kind), "{}", json);
        assert_eq!(json_value(&json, "client_id"), Some(m.client_id.to_string().as_str()), "{}", json);
        assert_eq!(json_value(&json, "for_client"), Some(m.for_client.to_string().as_str()), "{}", json);
        match &m.message {
            Some(p) => {
                let arr = json_value(&json, "message").expect("message vector");
                let got: Vec<u8> = arr
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect();
                assert_eq!(&got, p, "{}", json);
            }
            None => assert_eq!(json_value(&json, "message"), None, "{}", json),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flatc_buffers_decode_correctly_including_extensions() {
    let dir = tmpdir("fromjson");
    let cases: &[(&str, Message)] = &[
        (
            r#"{message_type: "ClientToClient", client_id: 5, for_client: 6, message: [1, 2, 3]}"#,
            Message::client_to_client(5, 6, &[1, 2, 3]),
        ),
        (r#"{message_type: "ClientRegistration", client_id: 9}"#, Message::registration(9)),
        (
            // Native-mode extension fields must be skipped.
            r#"{message_type: "ClientToClient", client_id: -1, for_client: 2147483647, message: [],
                message_id: 18446744073709551615, status: "Rejected", error_code: "RecipientBusy",
                reason: "ext", protocol_version: 1, max_frame_size: 65536, delivery_lanes: 4}"#,
            Message::client_to_client(-1, 2147483647, &[]),
        ),
    ];
    for (i, (json, want)) in cases.iter().enumerate() {
        let src = dir.join(format!("c{}.json", i));
        std::fs::write(&src, json).unwrap();
        run(Command::new("flatc").arg("-b").arg("-o").arg(&dir).arg(schema()).arg(&src));
        let bin = std::fs::read(dir.join(format!("c{}.bin", i))).unwrap();
        assert_eq!(&decode(&bin).unwrap(), want, "case {}", i);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn our_buffers_pass_the_cpp_verifier() {
    if !Path::new("/usr/include/flatbuffers/flatbuffers.h").exists() {
        panic!("needs libflatbuffers-dev (and g++) for the C++ Verifier check");
    }
    let dir = tmpdir("verify");
    run(Command::new("flatc").arg("--cpp").arg("-o").arg(&dir).arg(schema()));
    let prog = r#"
#include "debra_generated.h"
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>
int main(int argc, char **argv) {
  int bad = 0;
  for (int i = 1; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    flatbuffers::Verifier v(reinterpret_cast<const uint8_t *>(b.data()), b.size());
    if (!Debra::VerifyMessageBuffer(v)) { std::fprintf(stderr, "rejected: %s\n", argv[i]); bad = 1; }
  }
  return bad;
}
"#;
    std::fs::write(dir.join("verify.cpp"), prog).unwrap();
    run(Command::new("g++")
        .args(["-std=c++17", "-O0", "-o"])
        .arg(dir.join("verify"))
        .arg(dir.join("verify.cpp"))
        .arg("-I")
        .arg(&dir));
    let mut files = Vec::new();
    for (i, m) in samples().iter().enumerate() {
        let f = dir.join(format!("m{}.bin", i));
        std::fs::write(&f, encode(m)).unwrap();
        files.push(f);
    }
    run(Command::new(dir.join("verify")).args(&files));
    // And the verifier does reject a broken buffer (misaligned root), so the check means something.
    let mut broken = encode(&samples()[2]);
    broken[0] += 2;
    std::fs::write(dir.join("broken.bin"), broken).unwrap();
    let st = Command::new(dir.join("verify")).arg(dir.join("broken.bin")).output().unwrap().status;
    assert!(!st.success(), "the C++ verifier accepted a broken buffer");
    let _ = std::fs::remove_dir_all(&dir);
}
