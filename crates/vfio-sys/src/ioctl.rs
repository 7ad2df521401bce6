//! The VFIO and iommufd ioctls, each a typed function over `rustix::ioctl`.
//!
//! Every function returns the raw `Errno`; the library above adds the operation and its
//! arguments. Variable-length results (capability chains, IOVA range arrays) come back as
//! owned buffers that safe code parses with bounds checks.

use core::ffi::{CStr, c_int, c_void};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use rustix::io::{Errno, Result};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, Updater, ioctl, opcode};

use crate::mm::{DmaRange, Prot};

/// `flag` if `set`, else nothing.
const fn flag_if(set: bool, flag: u32) -> u32 {
    if set { flag } else { 0 }
}
use crate::uapi::{self, *};

const fn io(nr: u8) -> Opcode {
    opcode::none(VFIO_TYPE, nr)
}

/// An `_IO` ioctl whose argument is a pointer or integer and whose return value is the result.
///
/// Used where rustix's patterns don't fit: CHECK_EXTENSION and GET_DEVICE_FD return a value,
/// and variable-length arguments are buffers rather than one typed struct.
struct Raw {
    opcode: Opcode,
    arg: *mut c_void,
}

// SAFETY: `opcode` is one of the `_IO(';', n)` numbers above and `arg` is what that ioctl takes
// (a pointer to a live buffer of at least `argsz` bytes, or an integer). The output is the
// ioctl's return value, which needs no pointer access. IS_MUTATING is true because the kernel
// writes back into several of these buffers.
unsafe impl Ioctl for Raw {
    type Output = c_int;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> Result<c_int> {
        Ok(out)
    }
}

fn raw_int(fd: BorrowedFd<'_>, nr: u8, arg: usize) -> Result<c_int> {
    // SAFETY: callers pass an ioctl that takes an integer argument (or none) and only reads it.
    unsafe { ioctl(fd, Raw { opcode: io(nr), arg: arg as *mut c_void }) }
}

/// Runs an ioctl whose argument is a struct the kernel reads and writes back.
///
/// # Safety
/// `nr` must be an ioctl whose argument is a `T` (with `argsz`/`size` already set in `value`).
unsafe fn update<const OP: Opcode, T>(fd: BorrowedFd<'_>, value: &mut T) -> Result<()> {
    // SAFETY: per this function's contract, `T` is the argument type of `OP`, and `value` is a
    // live, exclusively borrowed `T`.
    unsafe { ioctl(fd, Updater::<OP, T>::new(value)) }
}

/// `VFIO_GET_API_VERSION`
#[doc(alias = "VFIO_GET_API_VERSION")]
pub fn get_api_version(container: impl AsFd) -> Result<i32> {
    raw_int(container.as_fd(), nr::VFIO_GET_API_VERSION, 0)
}

/// `VFIO_CHECK_EXTENSION`: >0 if the container supports `extension` (an IOMMU type).
#[doc(alias = "VFIO_CHECK_EXTENSION")]
pub fn check_extension(container: impl AsFd, extension: u32) -> Result<i32> {
    raw_int(container.as_fd(), nr::VFIO_CHECK_EXTENSION, extension as usize)
}

/// `VFIO_SET_IOMMU`
#[doc(alias = "VFIO_SET_IOMMU")]
pub fn set_iommu(container: impl AsFd, iommu_type: u32) -> Result<()> {
    raw_int(container.as_fd(), nr::VFIO_SET_IOMMU, iommu_type as usize).map(drop)
}

/// `VFIO_GROUP_GET_STATUS`
#[doc(alias = "VFIO_GROUP_GET_STATUS")]
pub fn group_get_status(group: impl AsFd) -> Result<vfio_group_status> {
    let mut status = vfio_group_status { argsz: argsz::<vfio_group_status>(), flags: 0 };
    // SAFETY: VFIO_GROUP_GET_STATUS takes a `vfio_group_status` with argsz set.
    unsafe { update::<{ io(nr::VFIO_GROUP_GET_STATUS) }, _>(group.as_fd(), &mut status)? };
    Ok(status)
}

/// `VFIO_GROUP_SET_CONTAINER`: `container` may be `/dev/vfio/vfio` or an iommufd.
#[doc(alias = "VFIO_GROUP_SET_CONTAINER")]
pub fn group_set_container(group: impl AsFd, container: impl AsFd) -> Result<()> {
    let mut fd: RawFd = container.as_fd().as_raw_fd();
    // SAFETY: the argument is a pointer to an int holding the container fd, read only.
    unsafe { ioctl(group.as_fd(), Raw { opcode: io(nr::VFIO_GROUP_SET_CONTAINER), arg: (&raw mut fd).cast() }) }
        .map(drop)
}

/// `VFIO_GROUP_GET_DEVICE_FD`: opens the device named `name` (a BDF for vfio-pci).
#[doc(alias = "VFIO_GROUP_GET_DEVICE_FD")]
pub fn group_get_device_fd(group: impl AsFd, name: &CStr) -> Result<OwnedFd> {
    // SAFETY: the argument is a NUL-terminated string the kernel only reads.
    let fd = unsafe {
        ioctl(group.as_fd(), Raw { opcode: io(nr::VFIO_GROUP_GET_DEVICE_FD), arg: name.as_ptr().cast_mut().cast() })
    }?;
    if fd < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: on success the ioctl returns a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VFIO_DEVICE_GET_INFO` (the fixed part; device-info capabilities are not used here).
#[doc(alias = "VFIO_DEVICE_GET_INFO")]
pub fn device_get_info(device: impl AsFd) -> Result<vfio_device_info> {
    let mut info = vfio_device_info { argsz: argsz::<vfio_device_info>(), ..Default::default() };
    // SAFETY: VFIO_DEVICE_GET_INFO takes a `vfio_device_info` with argsz set; with argsz at
    // the struct size the kernel writes no capabilities past it.
    unsafe { update::<{ io(nr::VFIO_DEVICE_GET_INFO) }, _>(device.as_fd(), &mut info)? };
    Ok(info)
}

/// Calls a "GET_INFO with capabilities" ioctl: first with the fixed struct, then again with a
/// buffer of the `argsz` the kernel asked for. Returns the whole buffer, fixed part first.
///
/// `init` writes the fixed header (argsz and any input fields) into the start of the buffer.
fn get_info_with_caps<T: Copy>(fd: BorrowedFd<'_>, nr: u8, init: T) -> Result<Vec<u8>> {
    // Starts at the fixed struct and only grows, so the buffer always holds it.
    let mut want = size_of::<T>();
    // Two rounds suffice unless the chain grows between the calls; allow a few, then give up.
    for _ in 0..4 {
        // u64 words keep the buffer aligned for the kernel's __aligned_u64 fields.
        let mut buf = vec![0u64; want.div_ceil(8)];
        // SAFETY: `buf` holds at least `size_of::<T>()` bytes and is 8-byte aligned, which is
        // enough for every uAPI struct here.
        unsafe { buf.as_mut_ptr().cast::<T>().write(init) };
        // SAFETY: argsz is the first u32 of every such struct; the buffer is aligned and
        // holds it. It tells the kernel how much room there really is.
        unsafe { buf.as_mut_ptr().cast::<u32>().write(want as u32) };
        // SAFETY: `nr` takes a struct whose first field is argsz, and the kernel writes at most
        // argsz bytes into the buffer, which is that long.
        unsafe { ioctl(fd, Raw { opcode: io(nr), arg: buf.as_mut_ptr().cast() })? };
        let mut bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let reported = u32::from_ne_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
        if reported <= want {
            bytes.truncate(want);
            return Ok(bytes);
        }
        want = reported;
    }
    Err(Errno::AGAIN)
}

/// `VFIO_DEVICE_GET_REGION_INFO`: the region's fixed info plus its capability chain, as bytes.
#[doc(alias = "VFIO_DEVICE_GET_REGION_INFO")]
pub fn device_get_region_info(device: impl AsFd, index: u32) -> Result<Vec<u8>> {
    let init = vfio_region_info { argsz: argsz::<vfio_region_info>(), index, ..Default::default() };
    get_info_with_caps(device.as_fd(), nr::VFIO_DEVICE_GET_REGION_INFO, init)
}

/// `VFIO_IOMMU_GET_INFO`: the type1 info plus its capability chain, as bytes.
#[doc(alias = "VFIO_IOMMU_GET_INFO")]
pub fn iommu_get_info(container: impl AsFd) -> Result<Vec<u8>> {
    let init = vfio_iommu_type1_info { argsz: argsz::<vfio_iommu_type1_info>(), ..Default::default() };
    get_info_with_caps(container.as_fd(), nr::VFIO_IOMMU_GET_INFO, init)
}

/// `VFIO_DEVICE_GET_IRQ_INFO`
#[doc(alias = "VFIO_DEVICE_GET_IRQ_INFO")]
pub fn device_get_irq_info(device: impl AsFd, index: u32) -> Result<vfio_irq_info> {
    let mut info = vfio_irq_info { argsz: argsz::<vfio_irq_info>(), index, ..Default::default() };
    // SAFETY: VFIO_DEVICE_GET_IRQ_INFO takes a `vfio_irq_info` with argsz and index set.
    unsafe { update::<{ io(nr::VFIO_DEVICE_GET_IRQ_INFO) }, _>(device.as_fd(), &mut info)? };
    Ok(info)
}

/// `VFIO_DEVICE_SET_IRQS` with `ACTION_TRIGGER`: wires `eventfds` to vectors `start..` of IRQ
/// `index`; an empty slice with `count` 0 disables the index.
#[doc(alias = "VFIO_DEVICE_SET_IRQS")]
pub fn device_set_irq_eventfds(device: impl AsFd, index: u32, start: u32, eventfds: &[BorrowedFd<'_>]) -> Result<()> {
    let header = size_of::<vfio_irq_set>();
    let argsz = header + eventfds.len() * size_of::<i32>();
    // u32 words: the header is five u32s and each eventfd one s32.
    let mut buf = vec![0u32; argsz / 4];
    let flags = VFIO_IRQ_SET_ACTION_TRIGGER
        | if eventfds.is_empty() { VFIO_IRQ_SET_DATA_NONE } else { VFIO_IRQ_SET_DATA_EVENTFD };
    buf[..5].copy_from_slice(&[argsz as u32, flags, index, start, eventfds.len() as u32]);
    for (slot, fd) in buf[5..].iter_mut().zip(eventfds) {
        *slot = fd.as_raw_fd() as u32;
    }
    // SAFETY: the buffer is a `vfio_irq_set` followed by `count` s32 eventfds, `argsz` bytes
    // long, 4-byte aligned; the kernel only reads it.
    unsafe { ioctl(device.as_fd(), Raw { opcode: io(nr::VFIO_DEVICE_SET_IRQS), arg: buf.as_mut_ptr().cast() }) }
        .map(drop)
}

/// `VFIO_DEVICE_SET_IRQS` with `ACTION_TRIGGER | DATA_NONE`: fires `count` vectors from `start`
/// in software, as if the device had sent them.
#[doc(alias = "VFIO_DEVICE_SET_IRQS")]
pub fn device_trigger_irq(device: impl AsFd, index: u32, start: u32, count: u32) -> Result<()> {
    let mut set = vfio_irq_set {
        argsz: argsz::<vfio_irq_set>(),
        flags: VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE,
        index,
        start,
        count,
    };
    // SAFETY: VFIO_DEVICE_SET_IRQS takes a `vfio_irq_set`; with DATA_NONE no data follows.
    unsafe { update::<{ io(nr::VFIO_DEVICE_SET_IRQS) }, _>(device.as_fd(), &mut set) }
}

/// `VFIO_DEVICE_RESET`
#[doc(alias = "VFIO_DEVICE_RESET")]
pub fn device_reset(device: impl AsFd) -> Result<()> {
    raw_int(device.as_fd(), nr::VFIO_DEVICE_RESET, 0).map(drop)
}

/// `VFIO_IOMMU_MAP_DMA` of `range` at `iova`, readable and writable by the device.
///
/// Safe because `DmaRange` can only be made from an [`crate::mm::MmapWindow`], whose memory is
/// never lent out as a Rust reference, so device writes can't break aliasing rules.
#[doc(alias = "VFIO_IOMMU_MAP_DMA")]
pub fn iommu_map_dma(container: impl AsFd, range: DmaRange<'_>, iova: u64, access: Prot) -> Result<()> {
    let flags = flag_if(access.read, VFIO_DMA_MAP_FLAG_READ) | flag_if(access.write, VFIO_DMA_MAP_FLAG_WRITE);
    let mut map = vfio_iommu_type1_dma_map {
        argsz: argsz::<vfio_iommu_type1_dma_map>(),
        flags,
        vaddr: range.addr() as u64,
        iova,
        size: range.len() as u64,
    };
    // SAFETY: VFIO_IOMMU_MAP_DMA takes a `vfio_iommu_type1_dma_map` with argsz set.
    unsafe { update::<{ io(nr::VFIO_IOMMU_MAP_DMA) }, _>(container.as_fd(), &mut map) }
}

/// `VFIO_IOMMU_UNMAP_DMA`: returns the number of bytes the kernel unmapped.
#[doc(alias = "VFIO_IOMMU_UNMAP_DMA")]
pub fn iommu_unmap_dma(container: impl AsFd, iova: u64, size: u64, flags: u32) -> Result<u64> {
    let mut unmap = vfio_iommu_type1_dma_unmap { argsz: argsz::<vfio_iommu_type1_dma_unmap>(), flags, iova, size };
    // SAFETY: VFIO_IOMMU_UNMAP_DMA takes a `vfio_iommu_type1_dma_unmap` with argsz set; no
    // dirty bitmap is requested, so nothing follows the struct. The kernel writes `size` back.
    unsafe { update::<{ io(nr::VFIO_IOMMU_UNMAP_DMA) }, _>(container.as_fd(), &mut unmap)? };
    Ok(unmap.size)
}

/// `VFIO_DEVICE_BIND_IOMMUFD` with a raw fd number, which need not be open: negative tests use
/// this to check that the kernel rejects a bad one.
#[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD")]
pub fn device_bind_iommufd_number(device: impl AsFd, iommufd: RawFd) -> Result<u32> {
    device_bind_iommufd_with(device, iommufd, None)
}

/// `VFIO_DEVICE_BIND_IOMMUFD`, with `VFIO_DEVICE_BIND_FLAG_TOKEN` and the VF token (a UUID's
/// 16 bytes) when one is given: a VF whose PF is on vfio-pci opens only with the PF's token.
#[doc(alias = "VFIO_DEVICE_BIND_IOMMUFD")]
pub fn device_bind_iommufd_with(device: impl AsFd, iommufd: RawFd, token: Option<&[u8; 16]>) -> Result<u32> {
    let (flags, token_uuid_ptr) = match token {
        Some(uuid) => (VFIO_DEVICE_BIND_FLAG_TOKEN, uuid.as_ptr() as u64),
        None => (0, 0),
    };
    let mut bind = vfio_device_bind_iommufd {
        argsz: argsz::<vfio_device_bind_iommufd>(),
        flags,
        iommufd,
        token_uuid_ptr,
        ..Default::default()
    };
    // SAFETY: VFIO_DEVICE_BIND_IOMMUFD takes a `vfio_device_bind_iommufd` with argsz set. With
    // the token flag, `token_uuid_ptr` points to 16 readable bytes that outlive the call (the
    // borrowed `token`); without it the kernel dereferences no pointer. The fd number is only
    // looked up.
    unsafe { update::<{ io(nr::VFIO_DEVICE_BIND_IOMMUFD) }, _>(device.as_fd(), &mut bind)? };
    Ok(bind.out_devid)
}

/// `VFIO_DEVICE_FEATURE` with `VFIO_DEVICE_FEATURE_SET`: sets `feature` from `data`.
#[doc(alias = "VFIO_DEVICE_FEATURE")]
pub fn device_feature_set(device: impl AsFd, feature: u32, data: &[u8]) -> Result<()> {
    let header = size_of::<vfio_device_feature>();
    let mut buf = vec![0u8; header + data.len()];
    let fixed = vfio_device_feature {
        argsz: u32::try_from(buf.len()).map_err(|_| Errno::INVAL)?,
        flags: VFIO_DEVICE_FEATURE_SET | (feature & VFIO_DEVICE_FEATURE_MASK),
    };
    buf[..4].copy_from_slice(&fixed.argsz.to_ne_bytes());
    buf[4..8].copy_from_slice(&fixed.flags.to_ne_bytes());
    buf[header..].copy_from_slice(data);
    // SAFETY: VFIO_DEVICE_FEATURE takes a `vfio_device_feature` followed by the feature's data;
    // `buf` holds both, `argsz` is its length, and the kernel reads at most `argsz` bytes of it.
    unsafe { ioctl(device.as_fd(), Raw { opcode: io(nr::VFIO_DEVICE_FEATURE), arg: buf.as_mut_ptr().cast() }) }
        .map(drop)
}

/// `VFIO_DEVICE_FEATURE` with `VFIO_DEVICE_FEATURE_GET` of `VFIO_DEVICE_FEATURE_DMA_BUF`:
/// exports `ranges` of region `region_index` (a BAR) as one dma-buf, opened with `open_flags`
/// (`O_RDWR`, `O_CLOEXEC`, ...). Returns the dma-buf's fd.
#[doc(alias = "VFIO_DEVICE_FEATURE_DMA_BUF")]
pub fn device_feature_dma_buf(
    device: impl AsFd,
    region_index: u32,
    ranges: &[vfio_region_dma_range],
    open_flags: u32,
) -> Result<OwnedFd> {
    let nr_ranges = u32::try_from(ranges.len()).map_err(|_| Errno::INVAL)?;
    let data = vfio_device_feature_dma_buf { region_index, open_flags, flags: 0, nr_ranges };
    let mut buf = Vec::with_capacity(size_of::<vfio_device_feature>() + size_of_val(&data) + size_of_val(ranges));
    buf.extend_from_slice(&[0; size_of::<vfio_device_feature>()]);
    buf.extend_from_slice(data.as_bytes());
    buf.extend_from_slice(ranges.as_bytes());
    let argsz = u32::try_from(buf.len()).map_err(|_| Errno::INVAL)?;
    buf[..4].copy_from_slice(&argsz.to_ne_bytes());
    let flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
    buf[4..8].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: VFIO_DEVICE_FEATURE takes a `vfio_device_feature`, then the feature's data: here a
    // `vfio_device_feature_dma_buf` and its `nr_ranges` ranges, all in `buf`, whose length is
    // `argsz`. The kernel reads no more than that and writes nothing back.
    let fd =
        unsafe { ioctl(device.as_fd(), Raw { opcode: io(nr::VFIO_DEVICE_FEATURE), arg: buf.as_mut_ptr().cast() }) }?;
    // SAFETY: on success the ioctl returns a new dma-buf fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attaches the bound device to an IOAS or HWPT.
#[doc(alias = "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
pub fn device_attach_iommufd_pt(device: impl AsFd, pt_id: u32) -> Result<u32> {
    let mut attach =
        vfio_device_attach_iommufd_pt { argsz: argsz::<vfio_device_attach_iommufd_pt>(), pt_id, ..Default::default() };
    // SAFETY: VFIO_DEVICE_ATTACH_IOMMUFD_PT takes a `vfio_device_attach_iommufd_pt` with argsz
    // set; the kernel writes the attached pt_id back.
    unsafe { update::<{ io(nr::VFIO_DEVICE_ATTACH_IOMMUFD_PT) }, _>(device.as_fd(), &mut attach)? };
    Ok(attach.pt_id)
}

/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`
#[doc(alias = "VFIO_DEVICE_DETACH_IOMMUFD_PT")]
pub fn device_detach_iommufd_pt(device: impl AsFd) -> Result<()> {
    let mut detach =
        vfio_device_detach_iommufd_pt { argsz: argsz::<vfio_device_detach_iommufd_pt>(), ..Default::default() };
    // SAFETY: VFIO_DEVICE_DETACH_IOMMUFD_PT takes a `vfio_device_detach_iommufd_pt`.
    unsafe { update::<{ io(nr::VFIO_DEVICE_DETACH_IOMMUFD_PT) }, _>(device.as_fd(), &mut detach) }
}

/// `IOMMU_IOAS_ALLOC`: returns the new IOAS id.
#[doc(alias = "IOMMU_IOAS_ALLOC")]
pub fn ioas_alloc(iommufd: impl AsFd) -> Result<u32> {
    let mut alloc = iommu_ioas_alloc { size: argsz::<iommu_ioas_alloc>(), ..Default::default() };
    // SAFETY: IOMMU_IOAS_ALLOC takes an `iommu_ioas_alloc` with size set.
    unsafe { update::<{ io(nr::IOMMU_IOAS_ALLOC) }, _>(iommufd.as_fd(), &mut alloc)? };
    Ok(alloc.out_ioas_id)
}

/// `IOMMU_DESTROY`: frees an iommufd object (IOAS, HWPT, ...).
#[doc(alias = "IOMMU_DESTROY")]
pub fn iommu_destroy(iommufd: impl AsFd, id: u32) -> Result<()> {
    let mut destroy = uapi::iommu_destroy { size: argsz::<uapi::iommu_destroy>(), id };
    // SAFETY: IOMMU_DESTROY takes an `iommu_destroy` with size set.
    unsafe { update::<{ io(nr::IOMMU_DESTROY) }, _>(iommufd.as_fd(), &mut destroy) }
}

/// `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges the IOAS can map, and its required alignment.
#[doc(alias = "IOMMU_IOAS_IOVA_RANGES")]
pub fn ioas_iova_ranges(iommufd: impl AsFd, ioas_id: u32) -> Result<(Vec<iommu_iova_range>, u64)> {
    let mut ranges: Vec<iommu_iova_range> = Vec::new();
    for _ in 0..4 {
        let mut query = iommu_ioas_iova_ranges {
            size: argsz::<iommu_ioas_iova_ranges>(),
            ioas_id,
            num_iovas: ranges.len() as u32,
            allowed_iovas: ranges.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: IOMMU_IOAS_IOVA_RANGES takes an `iommu_ioas_iova_ranges`; the kernel writes at
        // most `num_iovas` entries to `allowed_iovas`, which points at that many.
        let result = unsafe { update::<{ io(nr::IOMMU_IOAS_IOVA_RANGES) }, _>(iommufd.as_fd(), &mut query) };
        match result {
            Ok(()) => {
                ranges.truncate(query.num_iovas as usize);
                return Ok((ranges, query.out_iova_alignment));
            }
            // EMSGSIZE: the array was too small and num_iovas now says how many there are.
            Err(Errno::MSGSIZE) => ranges = vec![iommu_iova_range::default(); query.num_iovas as usize],
            Err(e) => return Err(e),
        }
    }
    Err(Errno::AGAIN)
}

/// `IOMMU_IOAS_MAP(_FILE)` flags: at exactly the IOVA given, with the device's access.
fn ioas_map_flags(access: Prot) -> u32 {
    IOMMU_IOAS_MAP_FIXED_IOVA
        | flag_if(access.read, IOMMU_IOAS_MAP_READABLE)
        | flag_if(access.write, IOMMU_IOAS_MAP_WRITEABLE)
}

/// `IOMMU_IOAS_MAP` of `range` at exactly `iova`, readable and writable.
///
/// Safe for the same reason as [`iommu_map_dma`].
#[doc(alias = "IOMMU_IOAS_MAP")]
pub fn ioas_map(iommufd: impl AsFd, ioas_id: u32, range: DmaRange<'_>, iova: u64, access: Prot) -> Result<()> {
    let flags = ioas_map_flags(access);
    let mut map = iommu_ioas_map {
        size: argsz::<iommu_ioas_map>(),
        flags,
        ioas_id,
        user_va: range.addr() as u64,
        length: range.len() as u64,
        iova,
        ..Default::default()
    };
    // SAFETY: IOMMU_IOAS_MAP takes an `iommu_ioas_map` with size set.
    unsafe { update::<{ io(nr::IOMMU_IOAS_MAP) }, _>(iommufd.as_fd(), &mut map) }
}

/// `IOMMU_IOAS_MAP_FILE` of `[start, start + length)` of the file `fd` (a memfd or a VFIO
/// dma-buf) at exactly `iova`.
#[doc(alias = "IOMMU_IOAS_MAP_FILE")]
pub fn ioas_map_file(
    iommufd: impl AsFd,
    ioas_id: u32,
    fd: BorrowedFd<'_>,
    start: u64,
    length: u64,
    iova: u64,
    access: Prot,
) -> Result<()> {
    let flags = ioas_map_flags(access);
    let mut map = iommu_ioas_map_file {
        size: argsz::<iommu_ioas_map_file>(),
        flags,
        ioas_id,
        fd: fd.as_raw_fd(),
        start,
        length,
        iova,
    };
    // SAFETY: IOMMU_IOAS_MAP_FILE takes an `iommu_ioas_map_file` with size set; the fd number
    // is only looked up, and the kernel takes its own reference.
    unsafe { update::<{ io(nr::IOMMU_IOAS_MAP_FILE) }, _>(iommufd.as_fd(), &mut map) }
}

/// `IOMMU_VFIO_IOAS` with `IOMMU_VFIO_IOAS_GET`: the IOAS the VFIO container emulation on this
/// iommufd uses (ENOENT before a group joins it).
#[doc(alias = "IOMMU_VFIO_IOAS")]
pub fn vfio_ioas_get(iommufd: impl AsFd) -> Result<u32> {
    let mut get = iommu_vfio_ioas { size: argsz::<iommu_vfio_ioas>(), op: IOMMU_VFIO_IOAS_GET, ..Default::default() };
    // SAFETY: IOMMU_VFIO_IOAS takes an `iommu_vfio_ioas` with size set; GET writes `ioas_id`.
    unsafe { update::<{ io(nr::IOMMU_VFIO_IOAS) }, _>(iommufd.as_fd(), &mut get)? };
    Ok(get.ioas_id)
}

/// `IOMMU_IOAS_UNMAP`: returns the number of bytes unmapped.
#[doc(alias = "IOMMU_IOAS_UNMAP")]
pub fn ioas_unmap(iommufd: impl AsFd, ioas_id: u32, iova: u64, length: u64) -> Result<u64> {
    let mut unmap = iommu_ioas_unmap { size: argsz::<iommu_ioas_unmap>(), ioas_id, iova, length };
    // SAFETY: IOMMU_IOAS_UNMAP takes an `iommu_ioas_unmap` with size set.
    unsafe { update::<{ io(nr::IOMMU_IOAS_UNMAP) }, _>(iommufd.as_fd(), &mut unmap)? };
    Ok(unmap.length)
}

/// `close(2)`, reporting its error, which dropping an [`OwnedFd`] ignores.
///
/// # Errors
/// What `close` said; the fd is gone either way.
pub fn close(fd: OwnedFd) -> Result<()> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` was an open fd owned by `fd`, whose ownership we took; it is closed here
    // exactly once and never used again, whatever `close` answers.
    unsafe { rustix::io::try_close(raw) }
}
