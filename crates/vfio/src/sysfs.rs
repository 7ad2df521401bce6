//! What sysfs says about a PCI device: driver, IOMMU group, VFIO cdev; and driver binding.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::feature::Feature;
use crate::{Bdf, Error, Result};

/// Where a BAR sits in the machine's physical address space (a line of sysfs `resource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarResource {
    /// The first physical address.
    pub start: u64,
    /// Its size in bytes.
    pub len: u64,
    /// The kernel's `IORESOURCE_*` flags.
    pub flags: u64,
}

impl BarResource {
    /// Whether it is memory (MMIO) rather than I/O ports: only memory can be mmap'ed or
    /// exported as a dma-buf.
    pub fn is_memory(&self) -> bool {
        const IORESOURCE_MEM: u64 = 0x200;
        self.flags & IORESOURCE_MEM != 0
    }
}

/// The driver vfiotest needs devices bound to.
pub const VFIO_PCI: &str = "vfio-pci";

/// A sysfs tree: `/sys` on a real machine, a directory of files in unit tests.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::system()
    }
}

impl Sysfs {
    /// The machine's own `/sys`.
    pub fn system() -> Self {
        Self::at("/sys")
    }

    /// A sysfs tree rooted elsewhere.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `/sys/bus/pci/devices/<bdf>`.
    pub fn device_dir(&self, bdf: Bdf) -> PathBuf {
        self.root.join("bus/pci/devices").join(bdf.to_string())
    }

    /// Fails with [`Error::NoSuchDevice`] unless the device exists.
    ///
    /// # Errors
    /// As above.
    pub fn ensure_exists(&self, bdf: Bdf) -> Result<()> {
        if self.device_dir(bdf).exists() { Ok(()) } else { Err(Error::NoSuchDevice(bdf)) }
    }

    /// The name of the driver bound to the device, if any.
    ///
    /// # Errors
    /// [`Error::NoSuchDevice`], or a sysfs read error.
    pub fn driver(&self, bdf: Bdf) -> Result<Option<String>> {
        self.ensure_exists(bdf)?;
        link_name(&self.device_dir(bdf).join("driver"))
    }

    /// Fails unless the device exists and is bound to vfio-pci, saying what it is bound to.
    ///
    /// # Errors
    /// [`Error::NoSuchDevice`] or [`Error::NotBoundToVfio`].
    pub fn ensure_vfio_bound(&self, bdf: Bdf) -> Result<()> {
        match self.driver(bdf)? {
            Some(d) if d == VFIO_PCI => Ok(()),
            driver => Err(Error::NotBoundToVfio { bdf, driver }),
        }
    }

    /// The device's IOMMU group number.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the device has no group: the IOMMU is absent or off, a host set
    /// up wrongly for VFIO (vfio-pci takes no device without one, no-IOMMU mode aside).
    pub fn iommu_group(&self, bdf: Bdf) -> Result<u32> {
        self.ensure_exists(bdf)?;
        let name = link_name(&self.device_dir(bdf).join("iommu_group"))?.ok_or_else(|| {
            Error::Invalid(format!("{bdf} has no IOMMU group: the IOMMU is absent or disabled (try intel_iommu=on)"))
        })?;
        name.parse().map_err(|_| Error::malformed("iommu_group link", format!("{name:?} is not a number")))
    }

    /// The device's VFIO character device, `/dev/vfio/devices/vfioN`, and the sysfs `dev`
    /// attribute that shows the kernel made it.
    ///
    /// # Errors
    /// [`Error::Unsupported`] if the kernel has no VFIO cdevs (`CONFIG_VFIO_DEVICE_CDEV`): the
    /// `vfio-dev/vfioN` class device exists without it, but has a `dev` attribute only with it.
    /// [`Error::Invalid`] for a vfio-pci device with no `vfio-dev/vfioN` at all.
    pub fn vfio_cdev(&self, bdf: Bdf) -> Result<(PathBuf, PathBuf)> {
        let lacks = |why: String| {
            Error::unsupported(
                Feature::Cdev,
                format!("{bdf} has no VFIO cdev: the kernel lacks CONFIG_VFIO_DEVICE_CDEV ({why})"),
            )
        };
        let dir = self.device_dir(bdf).join("vfio-dev");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Kernels before 6.1 have no vfio-dev class devices, and no cdevs either.
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(lacks(format!("no {}", dir.display()))),
            Err(e) => return Err(Error::file(dir, e)),
        };
        let name = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|name| name.starts_with("vfio"))
            .ok_or_else(|| Error::Invalid(format!("{bdf} is a VFIO device with nothing in {}", dir.display())))?;
        let dev_attr = dir.join(&name).join("dev");
        if !dev_attr.exists() {
            return Err(lacks(format!("{} has no dev attribute", dir.join(&name).display())));
        }
        Ok((PathBuf::from("/dev/vfio/devices").join(name), dev_attr))
    }

    /// A hex ID attribute such as `vendor` or `device`.
    ///
    /// # Errors
    /// A read error, or [`Error::Malformed`] if it is not hex.
    pub fn read_hex(&self, bdf: Bdf, attr: &str) -> Result<u64> {
        let path = self.device_dir(bdf).join(attr);
        let text = fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
        let digits = text.trim().trim_start_matches("0x");
        u64::from_str_radix(digits, 16)
            .map_err(|_| Error::malformed(path.display().to_string(), format!("{:?} is not hex", text.trim())))
    }

    /// BAR `bar`'s physical placement, from the device's `resource` file; `None` if the device
    /// doesn't implement that BAR.
    ///
    /// # Errors
    /// [`Error::NoSuchDevice`], a read error, or [`Error::Malformed`].
    pub fn bar_resource(&self, bdf: Bdf, bar: u32) -> Result<Option<BarResource>> {
        self.ensure_exists(bdf)?;
        let path = self.device_dir(bdf).join("resource");
        let text = fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
        let malformed = |detail: String| Error::malformed(path.display().to_string(), detail);
        let line = text.lines().nth(bar as usize).ok_or_else(|| malformed(format!("no line for BAR{bar}")))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| malformed(format!("BAR{bar}: {line:?} is not three hex numbers")))?;
        match fields[..] {
            [0, 0, _] => Ok(None),
            [start, end, flags] if end >= start => Ok(Some(BarResource { start, len: end - start + 1, flags })),
            _ => Err(malformed(format!("BAR{bar}: {line:?} is not start, end, flags"))),
        }
    }

    /// `sriov_totalvfs`: how many VFs the PF can have; `None` if it is not an SR-IOV PF.
    ///
    /// # Errors
    /// [`Error::NoSuchDevice`], a read error, or [`Error::Malformed`].
    pub fn sriov_totalvfs(&self, bdf: Bdf) -> Result<Option<u32>> {
        self.ensure_exists(bdf)?;
        match fs::read_to_string(self.device_dir(bdf).join("sriov_totalvfs")) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            _ => self.read_decimal(bdf, "sriov_totalvfs").map(Some),
        }
    }

    /// Whether the device's PCIe extended configuration space lists capability `id` (e.g.
    /// `PCI_EXT_CAP_ID_SRIOV`), read from sysfs `config`. The walk is bounded: at most one
    /// capability per dword, and it ends at a pointer below 0x100 or past the space.
    ///
    /// # Errors
    /// A read error.
    pub fn has_ext_capability(&self, bdf: Bdf, id: u16) -> Result<bool> {
        let path = self.device_dir(bdf).join("config");
        let config = fs::read(&path).map_err(|e| Error::file(&path, e))?;
        let mut at = 0x100usize;
        for _ in 0..(0x1000 - 0x100) / 4 {
            let Some(bytes) = config.get(at..at + 4) else { return Ok(false) };
            let header = u32::from_le_bytes(bytes.try_into().unwrap_or_default());
            if header == 0 || header == u32::MAX {
                return Ok(false);
            }
            if header & 0xffff == u32::from(id) {
                return Ok(true);
            }
            at = (header >> 20) as usize & !3;
            if at < 0x100 {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// `sriov_numvfs`: how many VFs the PF has now.
    ///
    /// # Errors
    /// A read error (there is none on a device without SR-IOV), or [`Error::Malformed`].
    pub fn sriov_numvfs(&self, bdf: Bdf) -> Result<u32> {
        self.read_decimal(bdf, "sriov_numvfs")
    }

    /// Creates `count` VFs on the PF, or removes them all with 0 (`sriov_numvfs`).
    ///
    /// # Errors
    /// The write's error: the PF's driver refused, e.g. vfio-pci without `enable_sriov`.
    pub fn set_sriov_numvfs(&self, bdf: Bdf, count: u32) -> Result<()> {
        write(&self.device_dir(bdf).join("sriov_numvfs"), &count.to_string())
    }

    /// The address of the PF's VF number `index` (the `virtfnN` link).
    ///
    /// # Errors
    /// [`Error::Invalid`] if there is no such VF, or [`Error::Malformed`] for a bad link.
    pub fn virtfn(&self, pf: Bdf, index: u32) -> Result<Bdf> {
        let link = self.device_dir(pf).join(format!("virtfn{index}"));
        let name = link_name(&link)?.ok_or_else(|| Error::Invalid(format!("{pf} has no VF {index}")))?;
        name.parse().map_err(|_| Error::malformed(link.display().to_string(), format!("{name:?} is not a BDF")))
    }

    fn read_decimal(&self, bdf: Bdf, attr: &str) -> Result<u32> {
        let path = self.device_dir(bdf).join(attr);
        let text = fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
        text.trim()
            .parse()
            .map_err(|_| Error::malformed(path.display().to_string(), format!("{:?} is not a number", text.trim())))
    }

    /// Binds the device to vfio-pci through `driver_override`, unbinding it from its current
    /// driver first. Returns the driver it had, if any.
    ///
    /// # Errors
    /// [`Error::NoSuchDevice`], a sysfs write error, or [`Error::Invalid`] if vfio-pci did not
    /// take the device.
    pub fn bind_vfio(&self, bdf: Bdf) -> Result<Option<String>> {
        let old = self.driver(bdf)?;
        if old.as_deref() == Some(VFIO_PCI) {
            return Ok(old);
        }
        let dir = self.device_dir(bdf);
        write(&dir.join("driver_override"), VFIO_PCI)?;
        if old.is_some() {
            write(&dir.join("driver/unbind"), &bdf.to_string())?;
        }
        write(&self.root.join("bus/pci/drivers_probe"), &bdf.to_string())?;
        match self.driver(bdf)? {
            Some(d) if d == VFIO_PCI => Ok(old),
            now => Err(Error::Invalid(format!(
                "{bdf} did not bind to vfio-pci (now {}); is CONFIG_VFIO_PCI enabled?",
                now.as_deref().unwrap_or("unbound")
            ))),
        }
    }

    /// The device's `driver_override`, if one is set (the kernel shows none as `(null)`).
    ///
    /// # Errors
    /// [`Error::NoSuchDevice`] or a read error.
    pub fn driver_override(&self, bdf: Bdf) -> Result<Option<String>> {
        self.ensure_exists(bdf)?;
        let path = self.device_dir(bdf).join("driver_override");
        let value = fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
        Ok(Some(value.trim().to_owned()).filter(|v| !v.is_empty() && v != "(null)"))
    }

    /// The devices in IOMMU group `group`.
    ///
    /// # Errors
    /// A read error, or [`Error::Malformed`] for a name that is no BDF.
    pub fn group_devices(&self, group: u32) -> Result<Vec<Bdf>> {
        let dir = self.root.join("kernel/iommu_groups").join(group.to_string()).join("devices");
        let entries = fs::read_dir(&dir).map_err(|e| Error::file(&dir, e))?;
        let mut bdfs = Vec::new();
        for entry in entries {
            let name = entry.map_err(|e| Error::file(&dir, e))?.file_name().to_string_lossy().into_owned();
            bdfs.push(name.parse().map_err(|_| Error::malformed("iommu group", format!("{name:?} is not a BDF")))?);
        }
        bdfs.sort();
        Ok(bdfs)
    }

    /// Undoes [`Sysfs::bind_vfio`]: puts `driver_override` back as it was, unbinds from
    /// vfio-pci, and lets the kernel probe again; if that finds another driver than `driver`,
    /// binds `driver` by name. Returns the driver the device ends up with.
    ///
    /// # Errors
    /// [`Error::NoSuchDevice`] or a sysfs write error.
    pub fn restore(&self, bdf: Bdf, driver: Option<&str>, driver_override: Option<&str>) -> Result<Option<String>> {
        let dir = self.device_dir(bdf);
        self.ensure_exists(bdf)?;
        write(&dir.join("driver_override"), driver_override.unwrap_or("\n"))?;
        if self.driver(bdf)?.as_deref() == Some(VFIO_PCI) && driver != Some(VFIO_PCI) {
            write(&dir.join("driver/unbind"), &bdf.to_string())?;
        }
        if self.driver(bdf)?.is_none() {
            write(&self.root.join("bus/pci/drivers_probe"), &bdf.to_string())?;
        }
        if let Some(wanted) = driver
            && self.driver(bdf)?.is_none()
        {
            write(&self.root.join("bus/pci/drivers").join(wanted).join("bind"), &bdf.to_string())?;
        }
        self.driver(bdf)
    }
}

fn link_name(path: &Path) -> Result<Option<String>> {
    match fs::read_link(path) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::file(path, e)),
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct FakeSysfs {
        dir: PathBuf,
    }

    impl FakeSysfs {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("vfiotest-sysfs-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("bus/pci/devices")).unwrap();
            Self { dir }
        }

        fn device(&self, bdf: &str, driver: Option<&str>, group: Option<u32>) {
            let dev = self.dir.join("bus/pci/devices").join(bdf);
            fs::create_dir_all(&dev).unwrap();
            if let Some(driver) = driver {
                symlink(format!("../../../bus/pci/drivers/{driver}"), dev.join("driver")).unwrap();
            }
            if let Some(group) = group {
                symlink(format!("../../../kernel/iommu_groups/{group}"), dev.join("iommu_group")).unwrap();
            }
            fs::write(dev.join("vendor"), "0x1b36\n").unwrap();
        }

        fn sysfs(&self) -> Sysfs {
            Sysfs::at(&self.dir)
        }
    }

    impl Drop for FakeSysfs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    #[test]
    fn missing_device_is_named() {
        let fake = FakeSysfs::new("missing");
        let err = fake.sysfs().ensure_vfio_bound(bdf("0000:00:1f.7")).unwrap_err();
        assert_eq!(err.to_string(), "no PCI device 0000:00:1f.7 (not in /sys/bus/pci/devices)");
    }

    #[test]
    fn device_on_another_driver_says_which() {
        let fake = FakeSysfs::new("other");
        fake.device("0000:00:04.0", Some("nvme"), Some(5));
        fake.device("0000:00:05.0", None, Some(6));
        let sysfs = fake.sysfs();
        let err = sysfs.ensure_vfio_bound(bdf("0000:00:04.0")).unwrap_err().to_string();
        assert_eq!(err, "0000:00:04.0 is bound to nvme, not vfio-pci (run `vfiotest setup 0000:00:04.0`)");
        let err = sysfs.ensure_vfio_bound(bdf("0000:00:05.0")).unwrap_err().to_string();
        assert!(err.contains("bound to no driver"), "{err}");
    }

    #[test]
    fn reads_group_and_ids() {
        let fake = FakeSysfs::new("group");
        fake.device("0000:00:03.0", Some("vfio-pci"), Some(7));
        fake.device("0000:00:06.0", Some("vfio-pci"), None);
        let sysfs = fake.sysfs();
        sysfs.ensure_vfio_bound(bdf("0000:00:03.0")).unwrap();
        assert_eq!(sysfs.iommu_group(bdf("0000:00:03.0")).unwrap(), 7);
        assert_eq!(sysfs.read_hex(bdf("0000:00:03.0"), "vendor").unwrap(), 0x1b36);
        let no_group = sysfs.iommu_group(bdf("0000:00:06.0")).unwrap_err();
        assert!(!no_group.is_unsupported() && no_group.to_string().contains("intel_iommu=on"), "a FAIL: {no_group}");
    }

    /// Without CONFIG_VFIO_DEVICE_CDEV the kernel still makes the `vfio-dev/vfioN` class device,
    /// but gives it no `dev` attribute: that, not the directory, says whether the cdev exists.
    #[test]
    fn a_cdev_exists_only_with_its_dev_attribute() {
        let fake = FakeSysfs::new("cdev");
        fake.device("0000:00:03.0", Some("vfio-pci"), Some(7));
        let sysfs = fake.sysfs();
        let bdf = bdf("0000:00:03.0");
        let e = sysfs.vfio_cdev(bdf).unwrap_err();
        assert!(e.is_unsupported() && e.to_string().contains("CONFIG_VFIO_DEVICE_CDEV"), "no vfio-dev: {e}");
        let class_dev = fake.dir.join("bus/pci/devices/0000:00:03.0/vfio-dev/vfio3");
        fs::create_dir_all(&class_dev).unwrap();
        let e = sysfs.vfio_cdev(bdf).unwrap_err();
        assert!(e.is_unsupported() && e.to_string().contains("no dev attribute"), "Debian's stock 7.3: {e}");
        fs::write(class_dev.join("dev"), "511:3\n").unwrap();
        let (node, attr) = sysfs.vfio_cdev(bdf).unwrap();
        assert_eq!(node, PathBuf::from("/dev/vfio/devices/vfio3"));
        assert_eq!(attr, class_dev.join("dev"));
    }

    #[test]
    fn bar_resources_by_index() {
        let fake = FakeSysfs::new("resource");
        fake.device("0000:00:03.0", Some("vfio-pci"), Some(1));
        let dev = fake.dir.join("bus/pci/devices/0000:00:03.0");
        fs::write(
            dev.join("resource"),
            "0x00000000fea00000 0x00000000fea00fff 0x0000000000040200\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x0000008000000000 0x0000009fffffffff 0x000000000014220c\n\
             0x000000000000c000 0x000000000000c0ff 0x0000000000040101\n",
        )
        .unwrap();
        let sysfs = fake.sysfs();
        let bdf = bdf("0000:00:03.0");
        let bar0 = sysfs.bar_resource(bdf, 0).unwrap().unwrap();
        assert_eq!((bar0.start, bar0.len, bar0.is_memory()), (0xfea0_0000, 0x1000, true));
        assert_eq!(sysfs.bar_resource(bdf, 1).unwrap(), None, "an unimplemented BAR");
        let bar2 = sysfs.bar_resource(bdf, 2).unwrap().unwrap();
        assert_eq!((bar2.start, bar2.len), (0x80_0000_0000, 128 << 30));
        assert!(!sysfs.bar_resource(bdf, 3).unwrap().unwrap().is_memory(), "I/O ports");
        assert!(matches!(sysfs.bar_resource(bdf, 4), Err(Error::Malformed { .. })), "no such line");
        fs::write(dev.join("resource"), "0x1000 0xfff 0x200\n").unwrap();
        assert!(matches!(sysfs.bar_resource(bdf, 0), Err(Error::Malformed { .. })), "end before start");
    }

    #[test]
    fn sriov_attributes_and_vf_links() {
        let fake = FakeSysfs::new("sriov");
        fake.device("0000:01:00.0", Some("vfio-pci"), Some(8));
        fake.device("0000:00:03.0", Some("vfio-pci"), Some(3));
        let pf = fake.dir.join("bus/pci/devices/0000:01:00.0");
        fs::write(pf.join("sriov_totalvfs"), "8\n").unwrap();
        fs::write(pf.join("sriov_numvfs"), "0\n").unwrap();
        symlink("../0000:01:10.0", pf.join("virtfn0")).unwrap();
        let sysfs = fake.sysfs();
        assert_eq!(sysfs.sriov_totalvfs(bdf("0000:01:00.0")).unwrap(), Some(8));
        assert_eq!(sysfs.sriov_totalvfs(bdf("0000:00:03.0")).unwrap(), None, "not a PF");
        assert_eq!(sysfs.sriov_numvfs(bdf("0000:01:00.0")).unwrap(), 0);
        sysfs.set_sriov_numvfs(bdf("0000:01:00.0"), 1).unwrap();
        assert_eq!(sysfs.sriov_numvfs(bdf("0000:01:00.0")).unwrap(), 1);
        assert_eq!(sysfs.virtfn(bdf("0000:01:00.0"), 0).unwrap(), bdf("0000:01:10.0"));
        assert_eq!(sysfs.virtfn(bdf("0000:01:00.0"), 1).unwrap_err().to_string(), "0000:01:00.0 has no VF 1");
        fs::write(pf.join("sriov_totalvfs"), "eight").unwrap();
        assert!(matches!(sysfs.sriov_totalvfs(bdf("0000:01:00.0")), Err(Error::Malformed { .. })));
    }
}
