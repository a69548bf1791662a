//! The `[display]` table as the agent embeds it in its TOML config.

use outlet_display::config::{ConfigError, DisplayConfig, DriverChoice, UtcOffset};
use outlet_display::driver::resolve_with;
use outlet_display::panel::{PanelModel, Rotation};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentConfig {
    #[serde(default)]
    display: DisplayConfig,
}

#[test]
fn empty_or_missing_table_gives_developer_defaults() {
    let c: AgentConfig = toml::from_str("").expect("parse");
    assert_eq!(c.display, DisplayConfig::default());
    let c: AgentConfig = toml::from_str("[display]\n").expect("parse");
    let d = c.display;
    assert_eq!(d.driver, DriverChoice::Auto);
    assert_eq!(d.png_path, std::path::PathBuf::from("display.png"));
    assert!(d.png_path.is_relative());
    assert_eq!(d.logical_size(), (240, 320));
    assert!(d.validate().is_ok());
}

#[test]
fn every_key_parses() {
    let text = r#"
        [display]
        driver = "spi"
        model = "st7796"
        width = 320
        height = 480
        rotation = 90
        offset_x = 0
        offset_y = 0
        invert = false
        bgr = true
        spidev = "/dev/spidev0.1"
        spi_hz = 40000000
        spi_mode = 3
        spi_buffer = 4096
        gpiochip = "/dev/gpiochip4"
        dc_line = 24
        reset_line = 25
        backlight_line = 18
        backlight_active_low = true
        backlight_timeout_secs = 120
        button_line = 17
        button_active_low = true
        png_path = "/var/lib/outlet-agent/screen.png"
        utc_offset = "+07:00"
    "#;
    let d = toml::from_str::<AgentConfig>(text).expect("parse").display;
    assert_eq!(d.model, PanelModel::St7796);
    assert_eq!(d.rotation, Rotation::Deg90);
    assert_eq!(d.logical_size(), (480, 320));
    assert_eq!(d.spi_mode, 3);
    assert_eq!(d.button_line, Some(17));
    assert_eq!(d.utc_offset, UtcOffset::from_minutes(420));
    assert_eq!(
        d.backlight_timeout(),
        Some(std::time::Duration::from_secs(120))
    );
    assert!(d.validate().is_ok());
}

#[test]
fn unknown_keys_and_bad_values_are_errors_that_name_the_key() {
    let e = toml::from_str::<AgentConfig>("[display]\nrotaton = 90\n")
        .err()
        .expect("typo rejected")
        .to_string();
    assert!(e.contains("rotaton"), "{e}");
    let e = toml::from_str::<AgentConfig>("[display]\nrotation = 45\n")
        .err()
        .expect("bad angle")
        .to_string();
    assert!(e.contains("rotation must be 0, 90, 180 or 270"), "{e}");
    let e = toml::from_str::<AgentConfig>("[display]\ndriver = \"hdmi\"\n")
        .err()
        .expect("bad driver")
        .to_string();
    assert!(e.contains("hdmi"), "{e}");
    let e = toml::from_str::<AgentConfig>("[display]\nutc_offset = \"WIB\"\n")
        .err()
        .expect("bad offset")
        .to_string();
    assert!(e.contains("utc_offset"), "{e}");
}

#[test]
fn validate_catches_ranges() {
    let bad = |f: fn(&mut DisplayConfig)| {
        let mut c = DisplayConfig::default();
        f(&mut c);
        c.validate().err()
    };
    assert_eq!(bad(|c| c.spi_mode = 4), Some(ConfigError::SpiMode(4)));
    assert_eq!(
        bad(|c| c.spi_buffer = 8192),
        Some(ConfigError::SpiBuffer(8192))
    );
    assert_eq!(bad(|c| c.spi_hz = 0), Some(ConfigError::SpiHz(0)));
    assert!(matches!(
        bad(|c| c.width = Some(320)),
        Some(ConfigError::Size { .. })
    ));
    let square_with_offset = bad(|c| {
        c.width = Some(240);
        c.height = Some(240);
        c.offset_y = 80;
    });
    assert!(square_with_offset.is_none());
    assert!(matches!(
        bad(|c| c.height = Some(100)),
        Some(ConfigError::TooSmall(240, 100))
    ));
}

#[test]
fn auto_picks_spi_then_terminal_then_none() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing = std::path::Path::new("/nonexistent/spidev0.0");
    assert_eq!(
        resolve_with(DriverChoice::Auto, here, false),
        DriverChoice::Spi
    );
    assert_eq!(
        resolve_with(DriverChoice::Auto, missing, true),
        DriverChoice::Terminal
    );
    assert_eq!(
        resolve_with(DriverChoice::Auto, missing, false),
        DriverChoice::None
    );
    assert_eq!(
        resolve_with(DriverChoice::Png, here, true),
        DriverChoice::Png
    );
}

#[test]
fn relative_png_path_resolves_against_the_data_directory() {
    let mut c = DisplayConfig::default();
    c.resolve_paths(std::path::Path::new("/var/lib/outlet-agent"));
    assert_eq!(
        c.png_path,
        std::path::PathBuf::from("/var/lib/outlet-agent/display.png")
    );
}

#[test]
fn the_language_reaches_the_display_task_and_an_unknown_one_is_refused() {
    let c: AgentConfig = toml::from_str("[display]\nlanguage = \"id\"\n").expect("parse");
    assert!(c.display.validate().is_ok());
    let options = outlet_display::task::TaskOptions::from_config(&c.display);
    assert_eq!(options.strings.code, "id");
    assert_eq!(options.strings.months[11], "Des");
    let c: AgentConfig = toml::from_str("[display]\nlanguage = \"fr\"\n").expect("parse");
    assert!(matches!(
        c.display.validate(),
        Err(ConfigError::Language(code, _)) if code == "fr"
    ));
}
