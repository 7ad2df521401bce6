//! LAVA's test signals: what `lava-test-case` and `lava-test-set` print, written straight from a
//! results document, so a LAVA test definition reports every verdict as a test case with its
//! duration.
//!
//! Each program on a device is a test set (`vfio_dma_mapping_test-0000-00-03.0`), each verdict
//! a test case named `fixture.variant.test` (LAVA keeps at most 100 characters of a name).
//! LAVA's results are pass, fail, skip and unknown; as in the TAP, an XFAIL and an XPASS are
//! `ok`, so they pass here, and the bug stays in the results document.

use ksft::Status;

use crate::results::Results;

/// The signal lines for every verdict of `results`.
pub fn signals(results: &Results) -> String {
    let mut out = String::new();
    let mut open_set: Option<String> = None;
    for record in &results.tests {
        let set = name(&match &record.device {
            Some(bdf) => format!("{}-{bdf}", record.program),
            None => record.program.clone(),
        });
        if open_set.as_ref() != Some(&set) {
            if open_set.is_some() {
                out.push_str("<LAVA_SIGNAL_TESTSET STOP>\n");
            }
            out.push_str(&format!("<LAVA_SIGNAL_TESTSET START {set}>\n"));
            open_set = Some(set);
        }
        let result = match record.verdict {
            Status::Pass | Status::XFail | Status::XPass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        };
        out.push_str(&format!(
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID={} RESULT={result} MEASUREMENT={:.3} UNITS=seconds>\n",
            name(record.test().unwrap_or("program")),
            record.duration_s
        ));
    }
    if open_set.is_some() {
        out.push_str("<LAVA_SIGNAL_TESTSET STOP>\n");
    }
    out
}

/// A name LAVA takes: letters, digits, `_`, `-` and `.` (a `:` becomes `-`, anything else
/// `_`), at most 100 characters.
fn name(text: &str) -> String {
    let clean = text.chars().map(|c| match c {
        c if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') => c,
        ':' => '-',
        _ => '_',
    });
    clean.take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample;

    #[test]
    fn every_verdict_is_a_test_case_in_its_programs_set() {
        let lines = signals(&sample());
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines[0], "<LAVA_SIGNAL_TESTSET START vfio_dma_mapping_test-0000-00-03.0>");
        assert_eq!(
            lines[1],
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=f.vfio_type1_iommu.map RESULT=pass MEASUREMENT=0.250 UNITS=seconds>"
        );
        assert!(lines[3].contains("TEST_CASE_ID=f.iommufd.unmap__all_ RESULT=fail"), "{}", lines[3]);
        assert_eq!(lines[4], "<LAVA_SIGNAL_TESTSET STOP>");
        assert!(lines[6].contains("RESULT=pass"), "an XFAIL is ok, as in the TAP: {}", lines[6]);
        assert!(lines[9].contains("TEST_CASE_ID=program RESULT=skip"), "{}", lines[9]);
        assert_eq!(lines.last(), Some(&"<LAVA_SIGNAL_TESTSET STOP>"));
        let cases = lines.iter().filter(|l| l.starts_with("<LAVA_SIGNAL_TESTCASE")).count();
        assert_eq!(cases as u32, sample().totals.tests());
    }

    #[test]
    fn names_are_held_to_lavas_characters_and_length() {
        assert_eq!(name("a b/c:d"), "a_b_c-d");
        assert_eq!(name(&"x".repeat(150)).len(), 100);
    }
}
