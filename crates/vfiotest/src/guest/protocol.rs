//! What the host and the guest's init say to each other: the payload the host packs into the
//! initramfs, the switches on the guest's kernel command line, and the marks the init prints on
//! the results port. Both sides use these types, so neither spells the other's strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where the payload lies in the initramfs.
pub const PAYLOAD_PATH: &str = "/etc/vfiotest/payload.json";

/// The guest's second serial port: the suite's TAP and the init's marks, never printk. The
/// first (`ttyS0`) is the kernel's console.
pub const RESULTS_PORT: &str = "/dev/ttyS1";

/// What the guest runs, as the host decided it: real arguments, no shell in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The devices: bound to vfio-pci before a run (not before the setup proof).
    pub bdfs: Vec<String>,
    /// What runs on them.
    pub command: GuestCommand,
}

/// The three things a guest can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestCommand {
    /// `vfiotest run ARGS BDFS` (with this machine's share of the programs).
    Run {
        /// Program names, filters, `--require`.
        args: Vec<String>,
    },
    /// `vfiotest bench ARGS` on the first device unless told otherwise.
    Bench {
        /// The bench's options.
        args: Vec<String>,
    },
    /// The `setup`/`cleanup` proof on the devices, left on their own drivers.
    SetupProof,
}

impl Payload {
    /// The `vfiotest` command line that runs it, with `units` (this machine's programs, by
    /// catalogue index), and the environment it needs.
    pub fn argv(&self, units: Option<&str>) -> (Vec<String>, Vec<(String, String)>) {
        let bdfs = self.bdfs.iter().cloned();
        match &self.command {
            GuestCommand::Run { args } => {
                let mut argv = vec!["run".to_owned()];
                if let Some(units) = units {
                    argv.extend(["--units".to_owned(), units.to_owned()]);
                }
                argv.extend(args.iter().cloned().chain(bdfs));
                (argv, Vec::new())
            }
            GuestCommand::Bench { args } => {
                let argv = std::iter::once("bench".to_owned()).chain(args.iter().cloned()).collect();
                (argv, vec![("VFIO_SELFTESTS_BDF".to_owned(), self.bdfs.join(" "))])
            }
            GuestCommand::SetupProof => (std::iter::once("setup-proof".to_owned()).chain(bdfs).collect(), Vec::new()),
        }
    }
}

/// The switches the host sets on the guest kernel's command line: what differs between the
/// machines of one run (`units`), a KVM probe, and ways to boot a machine that lacks something.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Switches {
    /// `vfiotest.probe`: answer [`GuestMark::ProbeOk`] and power off.
    pub probe: bool,
    /// `vfiotest.units=0,3,5`: this machine's share of the programs.
    pub units: Option<String>,
    /// `vfiotest.no_debugfs`: leave debugfs unmounted (no IOMMU page-table reader).
    pub no_debugfs: bool,
    /// `vfiotest.rm_node=/dev/iommu,...`: device nodes to remove (a host hiding them).
    pub rm_nodes: Vec<String>,
}

impl Switches {
    /// The command-line word for a KVM probe.
    pub const PROBE: &str = "vfiotest.probe";

    /// Reads them from a kernel command line (`/proc/cmdline`).
    pub fn parse(cmdline: &str) -> Self {
        let mut switches = Self::default();
        for word in cmdline.split_whitespace() {
            match word.split_once('=') {
                None if word == Self::PROBE => switches.probe = true,
                None if word == "vfiotest.no_debugfs" => switches.no_debugfs = true,
                Some(("vfiotest.units", units)) => switches.units = Some(units.to_owned()),
                Some(("vfiotest.rm_node", nodes)) => {
                    switches.rm_nodes.extend(nodes.split(',').filter(|n| !n.is_empty()).map(str::to_owned))
                }
                _ => {}
            }
        }
        switches
    }

    /// The command-line word for `units`.
    pub fn units_word(units: &str) -> String {
        format!("vfiotest.units={units}")
    }
}

/// A line the guest's init prints on the results port, between and around the suite's TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMark {
    /// The KVM probe reached init.
    ProbeOk,
    /// The guest is up: kernel, CPUs, hugetlb pages.
    Booted(String),
    /// The kernel found no IOMMU: nothing in `/sys/class/iommu`. The payload does not run.
    NoIommu,
    /// What `vfiotest setup` said of a device.
    Setup(String),
    /// The payload starts; TAP follows.
    Begin,
    /// Something the payload should have removed (e.g. VFs).
    LeftBehind(String),
    /// What the machine is, as JSON ([`crate::reports::Inventory`]), for the results document.
    Inventory(String),
    /// The payload ended with this exit code.
    End(i32),
}

/// Every mark starts with this.
const MARK: &str = "vfiotest-vm: ";

impl fmt::Display for GuestMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MARK)?;
        match self {
            Self::ProbeOk => f.write_str("probe-ok"),
            Self::Booted(what) => write!(f, "booted {what}"),
            Self::NoIommu => f.write_str("no iommu"),
            Self::Setup(what) => write!(f, "setup {what}"),
            Self::Begin => f.write_str("begin"),
            Self::LeftBehind(what) => write!(f, "left behind: {what}"),
            Self::Inventory(json) => write!(f, "inventory {json}"),
            Self::End(code) => write!(f, "end exit={code}"),
        }
    }
}

impl GuestMark {
    /// The mark a results-port line is, if it is one. An end whose code can't be read is a
    /// failure.
    pub fn parse(line: &str) -> Option<Self> {
        let note = line.strip_prefix(MARK)?;
        Some(match note {
            "probe-ok" => Self::ProbeOk,
            "no iommu" => Self::NoIommu,
            "begin" => Self::Begin,
            _ => {
                if let Some(code) = note.strip_prefix("end exit=") {
                    Self::End(code.trim().parse().unwrap_or(ksft::KSFT_FAIL))
                } else if let Some(what) = note.strip_prefix("left behind: ") {
                    Self::LeftBehind(what.to_owned())
                } else if let Some(json) = note.strip_prefix("inventory ") {
                    Self::Inventory(json.to_owned())
                } else if let Some(what) = note.strip_prefix("booted ") {
                    Self::Booted(what.to_owned())
                } else {
                    Self::Setup(note.strip_prefix("setup ").unwrap_or(note).to_owned())
                }
            }
        })
    }

    /// What the host shows of it after `[vm] `.
    pub fn note(&self) -> String {
        self.to_string().trim_start_matches(MARK).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mark_round_trips() {
        let marks = [
            GuestMark::ProbeOk,
            GuestMark::Booted("7.3.4, 2 cpus, hugetlb 1G:1 2M:64".into()),
            GuestMark::NoIommu,
            GuestMark::Setup("0000:00:07.0: vfio-pci (was nvme), IOMMU group 5".into()),
            GuestMark::Begin,
            GuestMark::LeftBehind("0000:01:00.0 has 1 VFs".into()),
            GuestMark::Inventory("{\"modes\":[]}".into()),
            GuestMark::End(4),
        ];
        for mark in marks {
            assert_eq!(GuestMark::parse(&mark.to_string()), Some(mark.clone()), "{mark}");
        }
        assert_eq!(GuestMark::parse("vfiotest-vm: end exit=x"), Some(GuestMark::End(1)), "unreadable: a failure");
        assert_eq!(GuestMark::parse("ok 1 vfio_setup.boots"), None);
        assert_eq!(GuestMark::Begin.note(), "begin");
    }

    #[test]
    fn switches_come_from_the_command_line() {
        let s = Switches::parse(
            "console=ttyS0 vfiotest.units=0,3 vfiotest.no_debugfs vfiotest.rm_node=/dev/iommu,/dev/vfio/vfio x=y",
        );
        assert_eq!(s.units.as_deref(), Some("0,3"));
        assert!(s.no_debugfs && !s.probe);
        assert_eq!(s.rm_nodes, ["/dev/iommu", "/dev/vfio/vfio"]);
        assert_eq!(Switches::parse("vfiotest.probe"), Switches { probe: true, ..Switches::default() });
        assert_eq!(Switches::parse(&Switches::units_word("1,2")).units.as_deref(), Some("1,2"));
    }

    #[test]
    fn payloads_become_real_argv() {
        let bdfs = vec!["0000:00:03.0".to_owned(), "0000:00:05.0".to_owned()];
        let run = Payload { bdfs: bdfs.clone(), command: GuestCommand::Run { args: vec!["-t".into(), "a b".into()] } };
        let (argv, env) = run.argv(Some("0,2"));
        assert_eq!(argv, ["run", "--units", "0,2", "-t", "a b", "0000:00:03.0", "0000:00:05.0"], "spaces survive");
        assert!(env.is_empty());
        let bench = Payload {
            bdfs: bdfs.clone(),
            command: GuestCommand::Bench { args: vec!["--memory".into(), "bar".into()] },
        };
        let (argv, env) = bench.argv(None);
        assert_eq!(argv, ["bench", "--memory", "bar"]);
        assert_eq!(env, [("VFIO_SELFTESTS_BDF".to_owned(), "0000:00:03.0 0000:00:05.0".to_owned())]);
        let proof = Payload { bdfs, command: GuestCommand::SetupProof };
        assert_eq!(proof.argv(Some("1")).0, ["setup-proof", "0000:00:03.0", "0000:00:05.0"]);
        let json = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<Payload>(&json).unwrap(), run);
    }
}
