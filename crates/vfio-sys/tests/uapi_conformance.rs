//! Our `#[repr(C)]` structs and ioctl numbers against the kernel's own headers.
//!
//! A small C program is generated from the same table as the Rust side, compiled with gcc
//! against `include/uapi` of Debian's linux-source-7.3 (unpacked by `vfiotest vm --prepare`, or
//! wherever `VFIOTEST_KERNEL_SRC` points), and its output is compared line by line.

use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::process::Command;

use rustix::ioctl::opcode;
use vfio_sys::uapi::{self, nr};

/// (C struct, Rust size, [(C field, Rust offset)]).
type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

macro_rules! layouts {
    ($($ty:ident { $($field:ident $(as $c:literal)?),* $(,)? })*) => {
        vec![$(
            (stringify!($ty), size_of::<uapi::$ty>(), vec![$(
                (layouts!(@name $field $($c)?), offset_of!(uapi::$ty, $field))
            ),*])
        ),*]
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $c:literal) => { $c };
}

fn structs() -> Vec<Layout> {
    layouts! {
        vfio_info_cap_header { id, version, next }
        vfio_group_status { argsz, flags }
        vfio_device_feature { argsz, flags }
        vfio_device_info { argsz, flags, num_regions, num_irqs, cap_offset, pad }
        vfio_region_info { argsz, flags, index, cap_offset, size, offset }
        vfio_region_sparse_mmap_area { offset, size }
        vfio_region_info_cap_sparse_mmap { header, nr_areas, reserved }
        vfio_region_info_cap_type { header, type_ as "type", subtype }
        vfio_irq_info { argsz, flags, index, count }
        vfio_irq_set { argsz, flags, index, start, count }
        vfio_iommu_type1_info { argsz, flags, iova_pgsizes, cap_offset, pad }
        vfio_iova_range { start, end }
        vfio_iommu_type1_info_cap_iova_range { header, nr_iovas, reserved }
        vfio_iommu_type1_dma_map { argsz, flags, vaddr, iova, size }
        vfio_iommu_type1_dma_unmap { argsz, flags, iova, size }
        vfio_region_dma_range { offset, length }
        vfio_device_feature_dma_buf { region_index, open_flags, flags, nr_ranges }
        vfio_device_bind_iommufd { argsz, flags, iommufd, out_devid, token_uuid_ptr }
        vfio_device_attach_iommufd_pt { argsz, flags, pt_id, pasid }
        vfio_device_detach_iommufd_pt { argsz, flags, pasid }
        iommu_destroy { size, id }
        iommu_ioas_alloc { size, flags, out_ioas_id }
        iommu_iova_range { start, last }
        iommu_ioas_iova_ranges { size, ioas_id, num_iovas, reserved as "__reserved", allowed_iovas, out_iova_alignment }
        iommu_ioas_map { size, flags, ioas_id, reserved as "__reserved", user_va, length, iova }
        iommu_ioas_unmap { size, ioas_id, iova, length }
        iommu_ioas_map_file { size, flags, ioas_id, fd, start, length, iova }
        iommu_vfio_ioas { size, ioas_id, op, reserved as "__reserved" }
    }
}

fn ioctls() -> Vec<(&'static str, u64)> {
    let io = |n: u8| u64::from(opcode::none(uapi::VFIO_TYPE, n));
    vec![
        ("VFIO_GET_API_VERSION", io(nr::VFIO_GET_API_VERSION)),
        ("VFIO_CHECK_EXTENSION", io(nr::VFIO_CHECK_EXTENSION)),
        ("VFIO_SET_IOMMU", io(nr::VFIO_SET_IOMMU)),
        ("VFIO_GROUP_GET_STATUS", io(nr::VFIO_GROUP_GET_STATUS)),
        ("VFIO_GROUP_SET_CONTAINER", io(nr::VFIO_GROUP_SET_CONTAINER)),
        ("VFIO_GROUP_GET_DEVICE_FD", io(nr::VFIO_GROUP_GET_DEVICE_FD)),
        ("VFIO_DEVICE_GET_INFO", io(nr::VFIO_DEVICE_GET_INFO)),
        ("VFIO_DEVICE_GET_REGION_INFO", io(nr::VFIO_DEVICE_GET_REGION_INFO)),
        ("VFIO_DEVICE_GET_IRQ_INFO", io(nr::VFIO_DEVICE_GET_IRQ_INFO)),
        ("VFIO_DEVICE_SET_IRQS", io(nr::VFIO_DEVICE_SET_IRQS)),
        ("VFIO_DEVICE_RESET", io(nr::VFIO_DEVICE_RESET)),
        ("VFIO_IOMMU_GET_INFO", io(nr::VFIO_IOMMU_GET_INFO)),
        ("VFIO_IOMMU_MAP_DMA", io(nr::VFIO_IOMMU_MAP_DMA)),
        ("VFIO_IOMMU_UNMAP_DMA", io(nr::VFIO_IOMMU_UNMAP_DMA)),
        ("VFIO_DEVICE_FEATURE", io(nr::VFIO_DEVICE_FEATURE)),
        ("VFIO_DEVICE_BIND_IOMMUFD", io(nr::VFIO_DEVICE_BIND_IOMMUFD)),
        ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", io(nr::VFIO_DEVICE_ATTACH_IOMMUFD_PT)),
        ("VFIO_DEVICE_DETACH_IOMMUFD_PT", io(nr::VFIO_DEVICE_DETACH_IOMMUFD_PT)),
        ("IOMMU_DESTROY", io(nr::IOMMU_DESTROY)),
        ("IOMMU_IOAS_ALLOC", io(nr::IOMMU_IOAS_ALLOC)),
        ("IOMMU_IOAS_IOVA_RANGES", io(nr::IOMMU_IOAS_IOVA_RANGES)),
        ("IOMMU_IOAS_MAP", io(nr::IOMMU_IOAS_MAP)),
        ("IOMMU_IOAS_UNMAP", io(nr::IOMMU_IOAS_UNMAP)),
        ("IOMMU_VFIO_IOAS", io(nr::IOMMU_VFIO_IOAS)),
        ("IOMMU_IOAS_MAP_FILE", io(nr::IOMMU_IOAS_MAP_FILE)),
        ("IOMMU_VFIO_IOAS_GET", u64::from(uapi::IOMMU_VFIO_IOAS_GET)),
        ("VFIO_DEVICE_FEATURE_DMA_BUF", u64::from(uapi::VFIO_DEVICE_FEATURE_DMA_BUF)),
        ("VFIO_TYPE1_IOMMU", u64::from(uapi::VFIO_TYPE1_IOMMU)),
        ("VFIO_TYPE1v2_IOMMU", u64::from(uapi::VFIO_TYPE1V2_IOMMU)),
        ("VFIO_REGION_INFO_CAP_SPARSE_MMAP", u64::from(uapi::VFIO_REGION_INFO_CAP_SPARSE_MMAP)),
        ("VFIO_REGION_INFO_CAP_MSIX_MAPPABLE", u64::from(uapi::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE)),
        ("VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE", u64::from(uapi::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE)),
        ("VFIO_DMA_UNMAP_FLAG_ALL", u64::from(uapi::VFIO_DMA_UNMAP_FLAG_ALL)),
        ("VFIO_IRQ_SET_DATA_NONE", u64::from(uapi::VFIO_IRQ_SET_DATA_NONE)),
        ("VFIO_IRQ_SET_DATA_EVENTFD", u64::from(uapi::VFIO_IRQ_SET_DATA_EVENTFD)),
        ("VFIO_IRQ_SET_ACTION_TRIGGER", u64::from(uapi::VFIO_IRQ_SET_ACTION_TRIGGER)),
        ("VFIO_PCI_VGA_REGION_INDEX", u64::from(uapi::VFIO_PCI_VGA_REGION_INDEX)),
        ("VFIO_PCI_CONFIG_REGION_INDEX", u64::from(uapi::VFIO_PCI_CONFIG_REGION_INDEX)),
        ("VFIO_DEVICE_BIND_FLAG_TOKEN", u64::from(uapi::VFIO_DEVICE_BIND_FLAG_TOKEN)),
        ("VFIO_DEVICE_FEATURE_MASK", u64::from(uapi::VFIO_DEVICE_FEATURE_MASK)),
        ("VFIO_DEVICE_FEATURE_GET", u64::from(uapi::VFIO_DEVICE_FEATURE_GET)),
        ("VFIO_DEVICE_FEATURE_SET", u64::from(uapi::VFIO_DEVICE_FEATURE_SET)),
        ("VFIO_DEVICE_FEATURE_PROBE", u64::from(uapi::VFIO_DEVICE_FEATURE_PROBE)),
        ("VFIO_DEVICE_FEATURE_PCI_VF_TOKEN", u64::from(uapi::VFIO_DEVICE_FEATURE_PCI_VF_TOKEN)),
        ("IOMMU_IOAS_MAP_FIXED_IOVA", u64::from(uapi::IOMMU_IOAS_MAP_FIXED_IOVA)),
        ("IOMMU_IOAS_MAP_WRITEABLE", u64::from(uapi::IOMMU_IOAS_MAP_WRITEABLE)),
        ("IOMMU_IOAS_MAP_READABLE", u64::from(uapi::IOMMU_IOAS_MAP_READABLE)),
    ]
}

#[path = "../../../tests-support/kernel_source.rs"]
mod kernel_source;
use kernel_source::kernel_source;

#[path = "../../../tests-support/trial.rs"]
mod trial;
use trial::Completion;

fn layouts_match_the_kernel_headers() -> Completion {
    let Some(src) = kernel_source() else {
        return Completion::ignored_with(
            "no unpacked linux-source-7.3 (run `vfiotest vm --prepare` or set VFIOTEST_KERNEL_SRC)",
        );
    };
    let (mut c, mut want) = (String::new(), String::new());
    c.push_str("#include <stddef.h>\n#include <stdio.h>\n#include <linux/vfio.h>\n#include <linux/iommufd.h>\nint main(void) {\n");
    for (name, size, fields) in structs() {
        writeln!(c, "printf(\"{name} %zu\\n\", sizeof(struct {name}));").unwrap();
        writeln!(want, "{name} {size}").unwrap();
        for (field, offset) in fields {
            writeln!(c, "printf(\"{name}.{field} %zu\\n\", offsetof(struct {name}, {field}));").unwrap();
            writeln!(want, "{name}.{field} {offset}").unwrap();
        }
    }
    for (name, value) in ioctls() {
        writeln!(c, "printf(\"{name} %llu\\n\", (unsigned long long){name});").unwrap();
        writeln!(want, "{name} {value}").unwrap();
    }
    c.push_str("return 0;\n}\n");

    let dir = std::env::temp_dir().join(format!("vfiotest-uapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (probe_c, probe) = (dir.join("probe.c"), dir.join("probe"));
    std::fs::write(&probe_c, &c).unwrap();
    let cc = Command::new("gcc")
        // The source tree's uapi headers still carry __user; headers_install would strip it.
        .args(["-D__user=", "-Wall", "-o"])
        .arg(&probe)
        .arg("-I")
        .arg(src.join("include/uapi"))
        .arg("-I")
        .arg(src.join("arch/x86/include/uapi"))
        .arg(&probe_c)
        .output()
        .expect("run gcc");
    assert!(cc.status.success(), "probe did not compile:\n{}", String::from_utf8_lossy(&cc.stderr));
    let out = Command::new(&probe).output().expect("run probe");
    let got = String::from_utf8(out.stdout).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let diff: Vec<_> = want
        .lines()
        .zip(got.lines())
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("ours: {w}   kernel: {g}"))
        .collect();
    assert!(
        diff.is_empty() && want.lines().count() == got.lines().count(),
        "uAPI mismatch against {}:\n{}",
        src.display(),
        diff.join("\n")
    );
    println!("uapi_conformance: {} structs and {} constants match {}", structs().len(), ioctls().len(), src.display());
    Completion::Completed
}

fn main() {
    trial::main(vec![trial::check_if("layouts_match_the_kernel_headers", layouts_match_the_kernel_headers)]);
}
