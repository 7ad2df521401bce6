//! End to end: a device node the kernel made but the host hides is a FAIL that says so, never
//! a SKIP that blames the kernel. The guest boots with `/dev/iommu` and `/dev/vfio/vfio` removed
//! (`vfiotest.rm_node=`) although its kernel has iommufd and the container; every mode of the
//! MMIO program must fail, naming the node, the sysfs evidence and devtmpfs.

use ksft::Status;

#[path = "../../../tests-support/trial.rs"]
mod trial;

#[path = "../../../tests-support/vm_results.rs"]
mod vm_results;

fn a_hidden_node_fails_naming_it() {
    let vm = ["--append", "vfiotest.rm_node=/dev/iommu,/dev/vfio/vfio", "--device", "0000:00:04.0"];
    let (code, got) = vm_results::run_vm(env!("CARGO_BIN_EXE_vfiotest"), &vm, &["vfio_dma_mapping_mmio_test"]);
    let tests: Vec<_> = got.iter().filter(|r| r.is_test()).collect();
    assert_eq!(tests.len(), 15, "five modes × three tests");
    for r in tests {
        let (node, class) = match r.test.contains(".vfio_type1") {
            true => ("/dev/vfio/vfio", "/sys/class/misc/vfio"),
            false => ("/dev/iommu", "/sys/class/misc/iommu"),
        };
        assert_eq!(r.verdict, Status::Fail, "{}: the kernel has it, so this is no SKIP: {:?}", r.test, r.reason);
        for says in [node, "although the kernel has it", class, "devtmpfs"] {
            assert!(r.reason.contains(says), "{}: should say {says:?}: {:?}", r.test, r.reason);
        }
    }
    assert_eq!(code, Some(1));
    println!("missing_node: a hidden /dev/iommu or /dev/vfio/vfio fails, naming the node and devtmpfs");
}

fn main() {
    trial::main(vec![trial::check("a_hidden_node_fails_naming_it", a_hidden_node_fails_naming_it)]);
}
