//! Segment names: what a user may call a segment, and the OS names derived from it.

use std::fmt;

/// Prefix of every shared-memory object shmimage creates.
const OS_PREFIX: &str = "/shmimage.";
/// macOS refuses POSIX shared-memory names longer than this (PSHMNAMLEN), leading slash included.
const OS_NAME_MAX: usize = 31;
/// A generation's suffix: `.` and 8 hex digits.
const GENERATION_SUFFIX_LEN: usize = 9;

/// A validated segment name: 1 to [`SegmentName::MAX_LEN`] characters of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentName(String);

/// Why a segment name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the segment name is empty: give a short name such as \"demo\"")]
    Empty,
    #[error(
        "the segment name {name:?} is {len} characters long; at most {max} are allowed, so that \
         the shared-memory names derived from it fit every OS"
    )]
    TooLong {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("the segment name {name:?} contains {ch:?}; use only letters, digits, '_' and '-'")]
    BadCharacter { name: String, ch: char },
}

impl SegmentName {
    /// The longest name allowed: every OS name derived from it stays within macOS's 31 characters.
    pub const MAX_LEN: usize = OS_NAME_MAX - OS_PREFIX.len() - GENERATION_SUFFIX_LEN;

    /// Checks `name` and keeps it.
    pub fn new(name: &str) -> Result<SegmentName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(NameError::BadCharacter {
                name: name.to_owned(),
                ch,
            });
        }
        if name.len() > Self::MAX_LEN {
            return Err(NameError::TooLong {
                name: name.to_owned(),
                len: name.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(SegmentName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The OS name of the control object: `/shmimage.NAME`.
    pub fn control_os_name(&self) -> String {
        format!("{OS_PREFIX}{}", self.0)
    }

    /// The OS name of data generation `generation`: `/shmimage.NAME.0000002a`.
    pub fn data_os_name(&self, generation: u32) -> String {
        format!("{OS_PREFIX}{}.{generation:08x}", self.0)
    }
}

impl std::str::FromStr for SegmentName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SegmentName::new(s)
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for name in ["demo", "shmimage", "a", "A-b_9", "twelve-chars"] {
            assert_eq!(SegmentName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn every_derived_os_name_fits_macos() {
        let longest = SegmentName::new(&"x".repeat(SegmentName::MAX_LEN)).unwrap();
        assert!(longest.control_os_name().len() <= OS_NAME_MAX);
        assert!(longest.data_os_name(u32::MAX).len() <= OS_NAME_MAX);
        assert_eq!(longest.data_os_name(u32::MAX).len(), OS_NAME_MAX);
    }

    #[test]
    fn names_that_could_escape_or_confuse_are_refused() {
        assert_eq!(SegmentName::new(""), Err(NameError::Empty));
        for (name, ch) in [
            ("a/b", '/'),
            ("..", '.'),
            ("a\0b", '\0'),
            ("x y", ' '),
            ("é", 'é'),
        ] {
            assert!(
                matches!(SegmentName::new(name), Err(NameError::BadCharacter { ch: c, .. }) if c == ch),
                "{name:?}"
            );
        }
        assert!(matches!(
            SegmentName::new(&"x".repeat(SegmentName::MAX_LEN + 1)),
            Err(NameError::TooLong { .. })
        ));
    }
}
