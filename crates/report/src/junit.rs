//! JUnit XML, as GitLab, Jenkins and most CI dashboards read it: one `<testsuite>` per program
//! and device, one `<testcase>` per verdict.
//!
//! Its totals are the TAP's: `tests` counts every verdict, `failures` the failed ones and
//! `skipped` the skipped ones. JUnit has no expected failure; kselftest prints an XFAIL and an
//! XPASS as `ok`, so they are passing test cases here too, each with a `kselftest` property
//! saying which it was and its bug in `<system-out>`.

use std::io;

use ksft::{Status, Summary};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use crate::results::{Results, TestRecord};

/// `results` as a JUnit XML document.
pub fn document(results: &Results) -> String {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    write(&mut writer, results).expect("writing to memory can't fail");
    String::from_utf8(writer.into_inner()).expect("the writer writes UTF-8") + "\n"
}

fn write(w: &mut Writer<Vec<u8>>, results: &Results) -> io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let totals = &results.totals;
    let time: f64 = results.tests.iter().map(|t| t.duration_s).sum();
    let attributes = counts("vfiotest", totals, time);
    w.create_element("testsuites")
        .with_attributes(attributes.iter().map(|(k, v)| (*k, v.as_str())))
        .write_inner_content(|w| {
            for (suite, records) in suites(&results.tests) {
                write_suite(w, results, &suite, &records)?;
            }
            Ok(())
        })?;
    Ok(())
}

fn write_suite(w: &mut Writer<Vec<u8>>, results: &Results, name: &str, records: &[&TestRecord]) -> io::Result<()> {
    let tally: Summary = records.iter().map(|r| r.verdict).collect();
    let time: f64 = records.iter().map(|r| r.duration_s).sum();
    let mut attributes = counts(name, &tally, time);
    attributes.push(("timestamp", results.started.clone()));
    attributes.push(("hostname", results.machine.hostname.clone()));
    w.create_element("testsuite")
        .with_attributes(attributes.iter().map(|(k, v)| (*k, v.as_str())))
        .write_inner_content(|w| {
            w.create_element("properties").write_inner_content(|w| {
                let kernel = format!("{} {}", results.kernel.release, results.kernel.version);
                property(w, "kernel", &kernel)?;
                if let Some(emulated) = &results.machine.emulated {
                    property(w, "viommu", &emulated.viommu)?;
                    property(w, "qemu", &emulated.qemu)?;
                }
                Ok(())
            })?;
            for record in records {
                write_case(w, name, record)?;
            }
            Ok(())
        })?;
    Ok(())
}

fn write_case(w: &mut Writer<Vec<u8>>, suite: &str, record: &TestRecord) -> io::Result<()> {
    let case = w.create_element("testcase").with_attributes([
        ("name", record.test().unwrap_or("(program)")),
        ("classname", suite),
        ("time", &format!("{:.3}", record.duration_s)),
    ]);
    match record.verdict {
        Status::Pass => {
            case.write_empty()?;
        }
        Status::Fail => {
            case.write_inner_content(|w| {
                w.create_element("failure").with_attribute(("message", record.reason.as_str())).write_empty()?;
                Ok(())
            })?;
        }
        Status::Skip => {
            case.write_inner_content(|w| {
                w.create_element("skipped").with_attribute(("message", record.reason.as_str())).write_empty()?;
                Ok(())
            })?;
        }
        Status::XFail | Status::XPass => {
            let (label, said) = match record.verdict {
                Status::XFail => ("xfail", "XFAIL (failed as expected by a known bug)"),
                _ => ("xpass", "XPASS (passed though a known bug should make it fail)"),
            };
            case.write_inner_content(|w| {
                w.create_element("properties").write_inner_content(|w| property(w, "kselftest", label))?;
                w.create_element("system-out")
                    .write_text_content(BytesText::new(&format!("{said}: {}", record.reason)))?;
                Ok(())
            })?;
        }
    }
    Ok(())
}

fn property(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> io::Result<()> {
    w.create_element("property").with_attributes([("name", name), ("value", value)]).write_empty()?;
    Ok(())
}

/// A suite's name and counts as JUnit's attributes.
fn counts(name: &str, tally: &Summary, time: f64) -> Vec<(&'static str, String)> {
    vec![
        ("name", name.to_owned()),
        ("tests", tally.tests().to_string()),
        ("failures", tally.fail.to_string()),
        ("errors", "0".to_owned()),
        ("skipped", tally.skip.to_string()),
        ("time", format!("{time:.3}")),
    ]
}

/// The records grouped by program and device, in the order they first appear.
fn suites(records: &[TestRecord]) -> Vec<(String, Vec<&TestRecord>)> {
    let mut suites: Vec<(String, Vec<&TestRecord>)> = Vec::new();
    for record in records {
        let name = match &record.device {
            Some(bdf) => format!("{} {bdf}", record.program),
            None => record.program.clone(),
        };
        match suites.iter_mut().find(|(n, _)| *n == name) {
            Some((_, members)) => members.push(record),
            None => suites.push((name, vec![record])),
        }
    }
    suites
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample;

    /// An attribute's value on the first element named `element`.
    fn attribute(xml: &str, element: &str, name: &str) -> String {
        let start = xml.find(&format!("<{element} ")).unwrap();
        let rest = &xml[start..];
        let at = rest.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        rest[at..at + rest[at..].find('"').unwrap()].to_owned()
    }

    #[test]
    fn the_totals_are_the_taps() {
        let results = sample();
        let xml = document(&results);
        let totals = &results.totals;
        assert_eq!(attribute(&xml, "testsuites", "tests"), totals.tests().to_string());
        assert_eq!(attribute(&xml, "testsuites", "failures"), totals.fail.to_string());
        assert_eq!(attribute(&xml, "testsuites", "skipped"), totals.skip.to_string());
        assert_eq!(xml.matches("<testcase ").count() as u32, totals.tests());
        assert_eq!(xml.matches("<failure ").count() as u32, totals.fail);
        assert_eq!(xml.matches("<skipped ").count() as u32, totals.skip);
    }

    #[test]
    fn suites_are_programs_on_devices_and_text_is_escaped() {
        let xml = document(&sample());
        assert_eq!(attribute(&xml, "testsuite", "name"), "vfio_dma_mapping_test 0000:00:03.0");
        assert_eq!(attribute(&xml, "testsuite", "tests"), "3");
        assert!(xml.contains("message=\"EINVAL &amp; more\""), "{xml}");
        assert!(xml.contains("name=\"f.iommufd.unmap &lt;all&gt;\""), "{xml}");
        assert!(xml.contains("<system-out>XFAIL (failed as expected by a known bug): QEMU&apos;s amd-iommu"), "{xml}");
    }
}
