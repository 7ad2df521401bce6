//! PCI addresses.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A PCI device address: `segment:bus:device.function`, e.g. `0000:00:03.0`.
///
/// ```
/// let bdf: vfio::Bdf = "0000:01:00.0".parse()?;
/// assert_eq!((bdf.bus, bdf.device, bdf.function), (1, 0, 0));
/// // Only the full sysfs form, as the kernel prints it: no segment, no device.
/// assert!("01:00.0".parse::<vfio::Bdf>().is_err());
/// # Ok::<(), vfio::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bdf {
    /// PCI segment (domain).
    pub segment: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl FromStr for Bdf {
    type Err = Error;

    /// Parses the full form only, as the kernel prints it in sysfs; hex digits in either case.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadBdf(s.to_owned());
        let (segment, rest) = s.split_once(':').ok_or_else(bad)?;
        let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (device, function) = rest.split_once('.').ok_or_else(bad)?;
        let hex = |field: &str, max_len: usize| -> Result<u32, Error> {
            if field.is_empty() || field.len() > max_len || !field.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(field, 16).map_err(|_| bad())
        };
        let (segment, bus, device, function) = (hex(segment, 4)?, hex(bus, 2)?, hex(device, 2)?, hex(function, 1)?);
        if device > 0x1f || function > 7 {
            return Err(bad());
        }
        Ok(Self { segment: segment as u16, bus: bus as u8, device: device as u8, function: function as u8 })
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.segment, self.bus, self.device, self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_sysfs_form() {
        let bdf: Bdf = "0000:00:03.0".parse().unwrap();
        assert_eq!((bdf.segment, bdf.bus, bdf.device, bdf.function), (0, 0, 3, 0));
        assert_eq!(bdf.to_string(), "0000:00:03.0");
        assert_eq!("ABCD:Ef:1f.7".parse::<Bdf>().unwrap().to_string(), "abcd:ef:1f.7");
    }

    #[test]
    fn rejects_everything_else_with_one_line() {
        for bad in [
            "",
            "00:03.0",
            "0000:00:03",
            "0000:00:20.0",
            "0000:00:03.8",
            "0000:000:03.0",
            "00000:00:03.0",
            "0000:00:03.0 ",
            "0000:0g:03.0",
            "+000:00:03.0",
            "0000:00:03.0.1",
        ] {
            let err = bad.parse::<Bdf>().unwrap_err().to_string();
            assert!(err.starts_with("invalid BDF"), "{bad:?} gave {err}");
            assert!(!err.contains('\n'));
        }
    }
}
