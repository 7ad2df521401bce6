//! `vfio_pci_sriov_uapi_test`: a VF whose PF is on vfio-pci opens only with the PF's VF token,
//! in every IOMMU mode: through `"BDF vf_token=UUID"` for a group, through
//! `VFIO_DEVICE_BIND_FLAG_TOKEN` for a cdev. The PF's token is the one it was opened with, or
//! the last one set with `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`, and it outlives the PF's fd.
//!
//! The program makes one VF before its tests and removes it after them, whatever they do.

use std::any::Any;
use std::sync::Arc;

use ksft::{Case, Outcome, Refusal, Tap, Test, Verdict, ensure};
use vfio::sysfs::{Sysfs, VFIO_PCI};
use vfio::{Bdf, Device, Errno, Feature, Iommu, IommuMode, Uuid};

/// The SR-IOV extended capability's ID (PCIe base spec; `PCI_EXT_CAP_ID_SRIOV`).
const PCI_EXT_CAP_ID_SRIOV: u16 = 0x10;

use super::mode_variants_by;

/// The token the PF is opened with, and the other one the tests use (upstream's UUIDs).
const UUID_1: Uuid = Uuid::from_u128(0x52ac9bff_3a88_4fbd_901a_0d767c3b6c97);
const UUID_2: Uuid = Uuid::from_u128(0x88594674_90a0_47a9_aea8_9d9b352ac08a);

#[derive(Clone, Copy)]
struct TokenVariant {
    mode: IommuMode,
    /// What the VF presents: the PF's token, another one, or none.
    vf_token: Option<Uuid>,
}

/// Removes the program's VF when dropped, as upstream's `atexit` handler does.
struct VfGuard {
    sysfs: Sysfs,
    pf: Bdf,
}

impl Drop for VfGuard {
    fn drop(&mut self) {
        if let Err(e) = self.sysfs.set_sriov_numvfs(self.pf, 0) {
            eprintln!("removing the VF of {}: {e}", self.pf);
        }
    }
}

/// Makes one VF on `pf` and checks it landed on vfio-pci; skips, with upstream's reasons, a
/// device that is no SR-IOV PF or already has VFs.
pub fn prologue(pf: Bdf, output: &mut Tap<'_>) -> Result<Option<Box<dyn Any>>, Refusal> {
    let sysfs = Sysfs::system();
    let fail = |e: vfio::Error| Refusal::Fail(e.to_string());
    match sysfs.sriov_totalvfs(pf).map_err(fail)? {
        // An SR-IOV capability without sysfs's attributes: the kernel lacks SR-IOV itself.
        None if sysfs.has_ext_capability(pf, PCI_EXT_CAP_ID_SRIOV).map_err(fail)? => {
            let lacks = format!("{pf} has an SR-IOV capability but no sriov_totalvfs: the kernel lacks CONFIG_PCI_IOV");
            return Err(match Verdict::from(vfio::Error::unsupported(Feature::SrIov, lacks)) {
                Verdict::Skip(reason) => Refusal::ExitSkip(reason),
                Verdict::Fail(message) => Refusal::Fail(message),
            });
        }
        None | Some(0) => return Err(Refusal::ExitSkip(format!("SR-IOV may not be supported by the PF: {pf}"))),
        Some(_) => {}
    }
    if sysfs.sriov_numvfs(pf).map_err(fail)? != 0 {
        return Err(Refusal::ExitSkip(format!("SR-IOV already configured for the PF: {pf}")));
    }
    sysfs.set_sriov_numvfs(pf, 1).map_err(|e| {
        Refusal::Fail(format!("creating a VF on {pf}: {e} (vfio-pci needs enable_sriov=1 to make VFs)"))
    })?;
    let guard = VfGuard { sysfs: sysfs.clone(), pf };
    let vf = sysfs.virtfn(pf, 0).map_err(fail)?;
    // A VF of a vfio-pci PF gets vfio-pci too (driver_override), or the tests mean nothing.
    match sysfs.driver(vf).map_err(fail)? {
        Some(driver) if driver == VFIO_PCI => {}
        other => {
            return Err(Refusal::Fail(format!(
                "VF {vf} is on {}, not vfio-pci",
                other.as_deref().unwrap_or("no driver")
            )));
        }
    }
    output.line(format!("Created 1 VF ({vf}) under the PF: {pf}"));
    Ok(Some(Box::new(guard)))
}

struct TokenFixture {
    // Drop order: the VF, then the PF, then the IOMMU context.
    vf: Option<Device>,
    pf: Option<Device>,
    iommu: Arc<Iommu>,
    pf_token: Uuid,
    vf_bdf: Bdf,
    variant: TokenVariant,
}

/// The VF, then the PF, then the context, as upstream's teardown.
impl ksft::Teardown for TokenFixture {
    fn teardown(self) -> Outcome {
        for device in [self.vf, self.pf].into_iter().flatten() {
            device.close()?;
        }
        Ok(self.iommu.close()?)
    }
}

impl TokenFixture {
    fn setup(pf_bdf: Bdf, variant: TokenVariant) -> Result<Self, Verdict> {
        let iommu = Iommu::open(variant.mode)?;
        // The VF the prologue made, in the harness process.
        let vf_bdf = Sysfs::system().virtfn(pf_bdf, 0)?;
        let pf = Device::open_with_token(pf_bdf, &iommu, Some(UUID_1))?;
        Ok(Self { vf: None, pf: Some(pf), iommu, pf_token: UUID_1, vf_bdf, variant })
    }

    /// Opens the VF with the variant's token: it must open exactly when that is the PF's
    /// token, and otherwise be refused by the token check (`EACCES`).
    fn open_vf(&mut self) -> Outcome {
        let should_open = self.variant.vf_token == Some(self.pf_token);
        let presented = self.variant.vf_token.map_or("no token".to_owned(), |t| format!("token {t}"));
        match Device::open_with_token(self.vf_bdf, &self.iommu, self.variant.vf_token) {
            Ok(vf) => {
                ensure!(should_open, "VF {} opened with {presented}; the PF's is {}", self.vf_bdf, self.pf_token);
                self.vf = Some(vf);
            }
            Err(e) => {
                ensure!(!should_open, "VF {} did not open with the PF's token: {e}", self.vf_bdf);
                ensure!(
                    e.errno() == Some(Errno::ACCESS),
                    "VF {} with {presented}: expected EACCES, got {e}",
                    self.vf_bdf
                );
            }
        }
        Ok(())
    }
}

pub fn tests(pf: Bdf) -> Vec<Test> {
    // Upstream's variant order: every mode with the same token, then another, then none.
    let tokens = [("same_uuid", Some(UUID_1)), ("diff_uuid", Some(UUID_2)), ("null_uuid", None)];
    let names = mode_variants_by(&tokens, |mode, vf_token| TokenVariant { mode, vf_token });
    let variants: Vec<(&str, TokenVariant)> = names.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    ksft::fixture(
        "vfio_pci_sriov_uapi_test",
        &variants,
        move |&variant| TokenFixture::setup(pf, variant),
        &[
            Case::new("init_token_match", init_token_match),
            Case::new("pf_early_close", pf_early_close),
            Case::new("override_token", override_token),
        ],
    )
}

/// The VF opens with the token the PF was opened with, and only with it.
fn init_token_match(t: &mut TokenFixture) -> Outcome {
    t.open_vf()
}

/// Closing the PF doesn't lift the VF's need for the PF's token.
fn pf_early_close(t: &mut TokenFixture) -> Outcome {
    if let Some(pf) = t.pf.take() {
        pf.close()?;
    }
    t.open_vf()
}

/// A token set on the open PF replaces the one it was opened with.
fn override_token(t: &mut TokenFixture) -> Outcome {
    let pf = t.pf.as_ref().ok_or_else(|| Verdict::Fail("the PF is not open".into()))?;
    pf.set_vf_token(UUID_2)?;
    t.pf_token = UUID_2;
    t.open_vf()
}
