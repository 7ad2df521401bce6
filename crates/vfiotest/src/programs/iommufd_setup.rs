//! `vfio_iommufd_setup_test`: the cdev + iommufd setup sequence, one ioctl at a time.

use ksft::{Case, Outcome, Test, Verdict, ensure};
use vfio::Bdf;
use vfio::cdev::{DeviceCdev, Iommufd};

struct CdevFixture {
    cdev: DeviceCdev,
    iommufd: Iommufd,
}

impl ksft::Teardown for CdevFixture {
    fn teardown(self) -> Outcome {
        self.cdev.close()?;
        Ok(self.iommufd.close()?)
    }
}

pub fn tests(bdf: Bdf) -> Vec<Test> {
    let setup = move |_: &()| -> Result<CdevFixture, Verdict> {
        Ok(CdevFixture { cdev: DeviceCdev::open(bdf)?, iommufd: Iommufd::open()? })
    };
    ksft::fixture(
        "vfio_cdev",
        &[("", ())],
        setup,
        &[
            Case::new("bind", bind),
            Case::new("get_info_without_bind_fails", get_info_without_bind_fails),
            Case::new("bind_bad_iommufd_fails", bind_bad_iommufd_fails),
            Case::new("repeated_bind_fails", repeated_bind_fails),
            Case::new("attach_detatch_pt", attach_detach_pt),
            Case::new("attach_invalid_pt_fails", attach_invalid_pt_fails),
        ],
    )
}

fn bind(t: &mut CdevFixture) -> Outcome {
    t.cdev.bind(&t.iommufd)?;
    t.cdev.info()?;
    Ok(())
}

fn get_info_without_bind_fails(t: &mut CdevFixture) -> Outcome {
    ensure!(t.cdev.info().is_err(), "VFIO_DEVICE_GET_INFO succeeded on an unbound cdev");
    Ok(())
}

fn bind_bad_iommufd_fails(t: &mut CdevFixture) -> Outcome {
    ensure!(t.cdev.bind_fd_number(-2).is_err(), "VFIO_DEVICE_BIND_IOMMUFD accepted fd -2");
    Ok(())
}

fn repeated_bind_fails(t: &mut CdevFixture) -> Outcome {
    t.cdev.bind(&t.iommufd)?;
    ensure!(t.cdev.bind(&t.iommufd).is_err(), "a second VFIO_DEVICE_BIND_IOMMUFD succeeded");
    Ok(())
}

// Upstream spells the test "attach_detatch_pt"; the name is kept so results diff line by line.
fn attach_detach_pt(t: &mut CdevFixture) -> Outcome {
    t.cdev.bind(&t.iommufd)?;
    let ioas = t.iommufd.alloc_ioas()?;
    t.cdev.attach(ioas)?;
    t.cdev.detach()?;
    Ok(())
}

fn attach_invalid_pt_fails(t: &mut CdevFixture) -> Outcome {
    t.cdev.bind(&t.iommufd)?;
    ensure!(t.cdev.attach(u32::MAX).is_err(), "VFIO_DEVICE_ATTACH_IOMMUFD_PT accepted pt_id 0xffffffff");
    Ok(())
}
