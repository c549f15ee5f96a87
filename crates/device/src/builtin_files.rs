//! The built-in device files: the one list of `devices/*.toml` compiled into the binary.
//! A test checks that it names every file of the folder (and nothing else).

macro_rules! devices {
    ($($file:literal),* $(,)?) => {
        pub(crate) const FILES: &[(&str, &str)] = &[
            $(($file, include_str!(concat!("../../../devices/", $file))),)*
        ];
    };
}

devices!(
    // Kept from the former constant table of codegen (same budgets and flags).
    "cortex-m0.toml",
    "cortex-m4.toml",
    "cortex-m7.toml",
    "generic.toml",
    // The classes of the seed's Table 1.
    "iot-device.toml",
    "smartphone.toml",
    "edge-server.toml",
    "cloud-server.toml",
    // Concrete parts and boards.
    "rp2040.toml",
    "stm32f446.toml",
    "stm32l4r5.toml",
    "nrf52840.toml",
    "stm32f746.toml",
    "stm32h743.toml",
    "raspberry-pi-zero-2-w.toml",
    "raspberry-pi-3b.toml",
    "raspberry-pi-4b.toml",
    "x86-64-host.toml",
);
