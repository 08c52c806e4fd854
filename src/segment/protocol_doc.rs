//! Checks that `docs/PROTOCOL.md`, the specification other languages read, says what the code
//! does: every table of offsets and sizes against `offset_of!` and `size_of`, the constants
//! against their values, the pixel formats against [`PixelFormat`].
//!
//! A table in the document starts after a line `<!-- protocol-table: NAME -->`. When the layout
//! changes, this test names the first row that no longer matches.

use super::layout::{
    ATTACHMENT_ENTRIES, AttachmentRecord, CONTROL_LEN, CONTROL_MAGIC, ControlHeader, DATA_MAGIC,
    DATA_OFFSET, DataHeader, LABEL_MAX, LAYOUT_VERSION, LabelCell, PngRecord, READY, SlotRecord,
};
use super::{
    ATTACHED_BYTE, CAPACITY_GRANULE, GATE_BYTE, MAX_SEQ, MAX_SLOT_CAPACITY, REGISTRY_BYTE,
};
use crate::raster::PixelFormat;
use std::mem::{offset_of, size_of};

/// The specification, read from the source tree.
fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The cells of every row of the table after `<!-- protocol-table: NAME -->`, header and
/// separator rows left out, backticks removed.
fn table(document: &str, name: &str) -> Vec<Vec<String>> {
    let marker = format!("<!-- protocol-table: {name} -->");
    let start = document
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no table marked {marker}"));
    document[start + marker.len()..]
        .lines()
        .skip_while(|line| line.trim().is_empty())
        .take_while(|line| line.trim_start().starts_with('|'))
        .skip(2)
        .map(|line| {
            let line = line.trim().trim_start_matches('|').trim_end_matches('|');
            split_cells(line)
                .into_iter()
                .map(|cell| cell.trim().replace('`', ""))
                .collect()
        })
        .collect()
}

/// Splits a table row at `|`, except where it is escaped as `\|`.
fn split_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

/// A number as the document writes it: decimal, or hexadecimal after `0x`.
fn number(cell: &str) -> u64 {
    let cell = cell.trim();
    let parsed = match cell.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => cell.parse(),
    };
    parsed.unwrap_or_else(|e| panic!("{cell:?} is not a number: {e}"))
}

/// `size_of` the field that `field` borrows.
fn size_of_field<T, F>(_field: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// One field as the code lays it out: name, offset, size.
type Field = (&'static str, usize, usize);

/// Checks the layout table `name` against `fields` (the named fields, in order) and a struct
/// of `total` bytes: every named field at its offset with its size, the rows contiguous from 0
/// to `total` (so `reserved` rows fill exactly the gaps), and every primitive type's size.
fn check_layout(document: &str, name: &str, fields: &[Field], total: usize) {
    let rows = table(document, name);
    let mut next_offset = 0;
    let mut named = Vec::new();
    for row in &rows {
        let [offset, size, kind, field, ..] = row.as_slice() else {
            panic!("{name}: a row with fewer than 4 cells: {row:?}");
        };
        let (offset, size) = (number(offset) as usize, number(size) as usize);
        assert_eq!(
            offset, next_offset,
            "{name}: the row for {field} starts at {offset}, but the previous row ends at \
             {next_offset}"
        );
        let primitive = match kind.as_str() {
            "u32" => Some(4),
            "u64" => Some(8),
            "u8[48]" => Some(48),
            _ => None,
        };
        if let Some(primitive) = primitive {
            assert_eq!(
                size, primitive,
                "{name}.{field}: a {kind} has {primitive} bytes"
            );
        }
        if field != "reserved" {
            named.push((field.clone(), offset, size));
        }
        next_offset = offset + size;
    }
    assert_eq!(
        next_offset, total,
        "{name}: the rows end at {next_offset}, the struct is {total} bytes"
    );
    let expected: Vec<(String, usize, usize)> = fields
        .iter()
        .map(|&(field, offset, size)| (field.to_owned(), offset, size))
        .collect();
    assert_eq!(
        named, expected,
        "{name}: (field, offset, size) in the document vs the code"
    );
}

#[test]
fn the_control_header_table_matches_the_code() {
    // The document gives the lock's size on x86-64 glibc, 40 bytes; elsewhere only the lock's
    // size (and so the header's) differ, and everything else is still checked.
    let lock_size = if cfg!(all(target_arch = "x86_64", target_env = "gnu")) {
        size_of::<libc::pthread_mutex_t>()
    } else {
        40
    };
    let lock_at = offset_of!(ControlHeader, lock);
    let slots = offset_of!(ControlHeader, slots);
    let fields: [Field; 14] = [
        (
            "magic",
            offset_of!(ControlHeader, magic),
            size_of_field(|h: &ControlHeader| &h.magic),
        ),
        (
            "version",
            offset_of!(ControlHeader, version),
            size_of_field(|h: &ControlHeader| &h.version),
        ),
        (
            "header_size",
            offset_of!(ControlHeader, header_size),
            size_of_field(|h: &ControlHeader| &h.header_size),
        ),
        (
            "ready",
            offset_of!(ControlHeader, ready),
            size_of_field(|h: &ControlHeader| &h.ready),
        ),
        (
            "notify",
            offset_of!(ControlHeader, notify),
            size_of_field(|h: &ControlHeader| &h.notify),
        ),
        (
            "state",
            offset_of!(ControlHeader, state),
            size_of_field(|h: &ControlHeader| &h.state),
        ),
        (
            "next_generation",
            offset_of!(ControlHeader, next_generation),
            size_of_field(|h: &ControlHeader| &h.next_generation),
        ),
        (
            "lock_recoveries",
            offset_of!(ControlHeader, lock_recoveries),
            size_of_field(|h: &ControlHeader| &h.lock_recoveries),
        ),
        (
            "created_at_ns",
            offset_of!(ControlHeader, created_at_ns),
            size_of_field(|h: &ControlHeader| &h.created_at_ns),
        ),
        ("slots[0]", slots, size_of::<SlotRecord>()),
        (
            "slots[1]",
            slots + size_of::<SlotRecord>(),
            size_of::<SlotRecord>(),
        ),
        (
            "attachments",
            offset_of!(ControlHeader, attachments),
            size_of_field(|h: &ControlHeader| &h.attachments),
        ),
        (
            "png",
            offset_of!(ControlHeader, png),
            size_of::<PngRecord>(),
        ),
        ("lock", lock_at, lock_size),
    ];
    check_layout(&document(), "ControlHeader", &fields, lock_at + lock_size);
    assert_eq!(
        lock_at + size_of::<libc::pthread_mutex_t>(),
        size_of::<ControlHeader>()
    );
    assert_eq!(
        size_of_field(|h: &ControlHeader| &h.attachments),
        ATTACHMENT_ENTRIES * size_of::<AttachmentRecord>()
    );
}

#[test]
fn the_slot_record_table_matches_the_code() {
    let fields: [Field; 10] = [
        (
            "generation",
            offset_of!(SlotRecord, generation),
            size_of_field(|s: &SlotRecord| &s.generation),
        ),
        (
            "format",
            offset_of!(SlotRecord, format),
            size_of_field(|s: &SlotRecord| &s.format),
        ),
        (
            "width",
            offset_of!(SlotRecord, width),
            size_of_field(|s: &SlotRecord| &s.width),
        ),
        (
            "height",
            offset_of!(SlotRecord, height),
            size_of_field(|s: &SlotRecord| &s.height),
        ),
        (
            "capacity",
            offset_of!(SlotRecord, capacity),
            size_of_field(|s: &SlotRecord| &s.capacity),
        ),
        (
            "byte_len",
            offset_of!(SlotRecord, byte_len),
            size_of_field(|s: &SlotRecord| &s.byte_len),
        ),
        (
            "seq",
            offset_of!(SlotRecord, seq),
            size_of_field(|s: &SlotRecord| &s.seq),
        ),
        (
            "written_at_ns",
            offset_of!(SlotRecord, written_at_ns),
            size_of_field(|s: &SlotRecord| &s.written_at_ns),
        ),
        (
            "writer_pid",
            offset_of!(SlotRecord, writer_pid),
            size_of_field(|s: &SlotRecord| &s.writer_pid),
        ),
        (
            "writer_label",
            offset_of!(SlotRecord, writer_label),
            size_of::<LabelCell>(),
        ),
    ];
    check_layout(&document(), "SlotRecord", &fields, size_of::<SlotRecord>());
}

#[test]
fn the_label_and_attachment_tables_match_the_code() {
    // The label's fields are private to the layout; its size and the text's length are not.
    // (The Python reader in tests/protocol reads labels at the documented offsets.)
    let label_fields: [Field; 2] = [("len", 0, 4), ("bytes", 8, LABEL_MAX)];
    check_layout(
        &document(),
        "LabelCell",
        &label_fields,
        size_of::<LabelCell>(),
    );
    let fields: [Field; 2] = [
        (
            "pid",
            offset_of!(AttachmentRecord, pid),
            size_of_field(|a: &AttachmentRecord| &a.pid),
        ),
        (
            "label",
            offset_of!(AttachmentRecord, label),
            size_of::<LabelCell>(),
        ),
    ];
    check_layout(
        &document(),
        "AttachmentRecord",
        &fields,
        size_of::<AttachmentRecord>(),
    );
}

#[test]
fn the_png_record_table_matches_the_code() {
    let fields: [Field; 9] = [
        (
            "version",
            offset_of!(PngRecord, version),
            size_of_field(|p: &PngRecord| &p.version),
        ),
        (
            "seq",
            offset_of!(PngRecord, seq),
            size_of_field(|p: &PngRecord| &p.seq),
        ),
        (
            "written_at_ns",
            offset_of!(PngRecord, written_at_ns),
            size_of_field(|p: &PngRecord| &p.written_at_ns),
        ),
        (
            "incarnation",
            offset_of!(PngRecord, incarnation),
            size_of_field(|p: &PngRecord| &p.incarnation),
        ),
        (
            "generation",
            offset_of!(PngRecord, generation),
            size_of_field(|p: &PngRecord| &p.generation),
        ),
        (
            "notify",
            offset_of!(PngRecord, notify),
            size_of_field(|p: &PngRecord| &p.notify),
        ),
        (
            "capacity",
            offset_of!(PngRecord, capacity),
            size_of_field(|p: &PngRecord| &p.capacity),
        ),
        (
            "byte_len",
            offset_of!(PngRecord, byte_len),
            size_of_field(|p: &PngRecord| &p.byte_len),
        ),
        (
            "claim",
            offset_of!(PngRecord, claim),
            size_of_field(|p: &PngRecord| &p.claim),
        ),
    ];
    check_layout(&document(), "PngRecord", &fields, size_of::<PngRecord>());
}

#[test]
fn the_data_header_table_matches_the_code() {
    let fields: [Field; 3] = [
        (
            "magic",
            offset_of!(DataHeader, magic),
            size_of_field(|d: &DataHeader| &d.magic),
        ),
        (
            "generation",
            offset_of!(DataHeader, generation),
            size_of_field(|d: &DataHeader| &d.generation),
        ),
        (
            "capacity",
            offset_of!(DataHeader, capacity),
            size_of_field(|d: &DataHeader| &d.capacity),
        ),
    ];
    check_layout(&document(), "DataHeader", &fields, size_of::<DataHeader>());
}

#[test]
fn the_constants_match_the_code() {
    let expected: [(&str, u64); 14] = [
        ("CONTROL_MAGIC", CONTROL_MAGIC),
        ("DATA_MAGIC", DATA_MAGIC),
        ("LAYOUT_VERSION", u64::from(LAYOUT_VERSION)),
        ("READY", u64::from(READY)),
        ("CONTROL_LEN", CONTROL_LEN as u64),
        ("DATA_OFFSET", DATA_OFFSET),
        ("ATTACHMENT_ENTRIES", ATTACHMENT_ENTRIES as u64),
        ("LABEL_MAX", LABEL_MAX as u64),
        ("GATE_BYTE", GATE_BYTE),
        ("ATTACHED_BYTE", ATTACHED_BYTE),
        ("REGISTRY_BYTE", REGISTRY_BYTE),
        ("CAPACITY_GRANULE", CAPACITY_GRANULE),
        ("MAX_SEQ", MAX_SEQ),
        ("MAX_SLOT_CAPACITY", MAX_SLOT_CAPACITY),
    ];
    let documented: Vec<(String, u64)> = table(&document(), "constants")
        .iter()
        .map(|row| (row[0].clone(), number(&row[1])))
        .collect();
    let expected: Vec<(String, u64)> = expected
        .iter()
        .map(|&(name, value)| (name.to_owned(), value))
        .collect();
    assert_eq!(
        documented, expected,
        "(name, value) in the document vs the code"
    );
    assert_eq!(&CONTROL_MAGIC.to_le_bytes(), b"SHMIMAGE");
    assert_eq!(&DATA_MAGIC.to_le_bytes(), b"SHMIDATA");
}

#[test]
fn the_pixel_format_table_matches_the_code() {
    let documented: Vec<Vec<String>> = table(&document(), "pixel-formats");
    let expected: Vec<Vec<String>> = PixelFormat::ALL
        .iter()
        .map(|format| {
            vec![
                format.code().to_string(),
                format.to_string(),
                format.channels().to_string(),
                format.bit_depth().to_string(),
                format.bytes_per_pixel().to_string(),
            ]
        })
        .collect();
    assert_eq!(
        documented, expected,
        "(code, format, channels, bits, bytes) vs the code"
    );
}

/// The value of the row named `name` in the `Name | Value | Meaning` table `table_name`.
fn named_value(document: &str, table_name: &str, name: &str) -> String {
    let rows = table(document, table_name);
    let names: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    rows.iter()
        .find(|row| row[0] == name)
        .unwrap_or_else(|| panic!("{table_name}: no row for {name}, only {names:?}"))[1]
        .clone()
}

/// A duration as the document writes it: `10 s`.
fn seconds(cell: &str) -> std::time::Duration {
    let value = cell
        .strip_suffix(" s")
        .unwrap_or_else(|| panic!("{cell:?} is not a number of seconds (\"10 s\")"));
    std::time::Duration::from_secs(number(value))
}

#[test]
fn the_pixel_word_is_the_unit_of_every_copy() {
    let document = document();
    assert_eq!(
        table(&document, "pixel-words").len(),
        1,
        "pixel-words: one row"
    );
    let word = number(&named_value(&document, "pixel-words", "PIXEL_WORD"));
    let word_len = word as usize;
    // Copies of any length touch whole words.
    assert_eq!(super::copy::covered_len(1), word_len);
    assert_eq!(super::copy::covered_len(word_len), word_len);
    assert_eq!(super::copy::covered_len(word_len + 1), 2 * word_len);
    // The pixels start on a word, and the capacities writers choose hold whole words.
    assert_eq!(DATA_OFFSET % word, 0);
    assert_eq!(CAPACITY_GRANULE % word, 0);
    // "A valid slot's capacity holds the covered length": 3x1 RGB 8-bit is 9 bytes.
    let slot = |capacity| super::layout::SlotFields {
        generation: 1,
        format: PixelFormat::Rgb8.code(),
        width: 3,
        height: 1,
        capacity,
        byte_len: 9,
        seq: 1,
        written_at_ns: 0,
        writer_pid: 0,
        writer_label: super::layout::RawLabel {
            len: 0,
            bytes: [0; LABEL_MAX],
        },
    };
    assert!(
        slot(2 * word - 1).validate(1, MAX_SLOT_CAPACITY).is_err(),
        "a slot without room for its last whole word is refused"
    );
    assert!(slot(2 * word).validate(1, MAX_SLOT_CAPACITY).is_ok());
}

#[test]
fn the_implementation_choices_match_the_code() {
    let document = document();
    let documented: Vec<String> = table(&document, "implementation-choices")
        .iter()
        .map(|row| row[0].clone())
        .collect();
    assert_eq!(
        documented,
        ["LOCK_TIMEOUT", "GATE_TIMEOUT", "OPTIMISTIC_READS"],
        "implementation-choices: the rows"
    );
    let value = |name| named_value(&document, "implementation-choices", name);
    assert_eq!(seconds(&value("LOCK_TIMEOUT")), super::LOCK_TIMEOUT);
    assert_eq!(seconds(&value("GATE_TIMEOUT")), super::GATE_TIMEOUT);
    assert_eq!(
        number(&value("OPTIMISTIC_READS")),
        super::OPTIMISTIC_READS as u64
    );
}

#[test]
fn the_title_and_the_changes_follow_the_layout_version() {
    let document = document();
    let title = document.lines().next().unwrap_or_default();
    assert_eq!(
        title,
        format!("# The shmimage segment protocol, layout version {LAYOUT_VERSION}"),
        "the title names the layout version the document describes"
    );
    // Every version after the first says what changed, in a section of its own.
    for version in 2..=LAYOUT_VERSION {
        let heading = format!("## Changes from version {}", version - 1);
        assert!(
            document.lines().any(|line| line == heading),
            "docs/PROTOCOL.md describes layout version {LAYOUT_VERSION} but has no section \
             {heading:?} saying what version {version} changed"
        );
    }
}

#[test]
fn tables_are_found_and_split_as_written() {
    let text =
        "x\n<!-- protocol-table: t -->\n| A | B |\n| --- | --- |\n| 1 | `a \\| b` |\n\nafter";
    assert_eq!(
        table(text, "t"),
        vec![vec!["1".to_owned(), "a | b".to_owned()]]
    );
    assert_eq!(number("0x10"), 16);
    assert_eq!(number("4096"), 4096);
}
