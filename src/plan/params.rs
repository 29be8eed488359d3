//! Request parameters as typed values, and their parsing from raw manifest nodes.
//!
//! Why this exists: one place knows what every API parameter may hold (the
//! documented rules), so defaults, jobs, sweeps and CSV cells are all checked
//! by the same code, with the same messages.

use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::manifest::{entry, stray_key, suggest, Node, Value};

/// The documented `image_size` presets.
pub const SIZE_PRESETS: &[&str] = &[
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
    "portrait_3_2",
    "landscape_3_2",
    "portrait_hd",
    "landscape_hd",
];
/// Bounds we accept for a custom width or height, in pixels.
pub const CUSTOM_SIZE_RANGE: std::ops::RangeInclusive<u32> = 16..=4096;
/// The largest seed we send: integers above 2^53 do not survive JSON intact.
pub const MAX_SEED: u64 = (1 << 53) - 1;
/// The vendor advises prompts of at most this many characters.
pub const PROMPT_ADVISED_CHARS: usize = 500;
pub const MAX_IMAGE_URLS: usize = 4;
/// The most images one request may ask for. The vendor publishes no bound;
/// this is the common one of its model family, and it bounds what a single
/// reply (images inline with `sync_mode`) may hold.
pub const MAX_NUM_IMAGES: u32 = 4;
/// The largest local image file sent inline as a data URI.
pub const MAX_LOCAL_IMAGE_BYTES: u64 = 10 << 20;

pub use crate::vocab::Kind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageSize {
    Preset(&'static str),
    Custom { width: u32, height: u32 },
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSize::Preset(p) => f.write_str(p),
            ImageSize::Custom { width, height } => write!(f, "{width}x{height}"),
        }
    }
}

impl Serialize for ImageSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ImageSize::Preset(p) => s.serialize_str(p),
            ImageSize::Custom { width, height } => {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct("ImageSize", 2)?;
                st.serialize_field("width", width)?;
                st.serialize_field("height", height)?;
                st.end()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Jpeg,
    Png,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
        }
    }
}

/// A condition image for image-to-image: sent as written, or read from disk
/// and sent as a data URI when the request is submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageInput {
    /// An `http(s)://` URL or a `data:` URI.
    Url(String),
    /// A local file, resolved against the manifest that names it.
    File { written: String, path: PathBuf },
}

impl ImageInput {
    /// The value as the user wrote it (what keys and reports use).
    pub fn written(&self) -> &str {
        match self {
            ImageInput::Url(u) => u,
            ImageInput::File { written, .. } => written,
        }
    }
}

impl Serialize for ImageInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.written())
    }
}

/// One concrete request, as `plan` hands it to later stages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Request {
    pub prompt: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_urls: Option<Arc<[ImageInput]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<ImageSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_inference_steps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_images: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_safety_checker: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_format: Option<OutputFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_mode: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_prompt_expansion: Option<bool>,
}

impl Request {
    /// A request with only a prompt; set the other fields as needed.
    pub fn new(prompt: &str) -> Request {
        Request {
            prompt: Arc::from(prompt),
            ..Request::empty()
        }
    }

    pub(crate) fn empty() -> Request {
        Request {
            prompt: Arc::from(""),
            image_urls: None,
            image_size: None,
            num_inference_steps: None,
            guidance_scale: None,
            seed: None,
            num_images: None,
            enable_safety_checker: None,
            output_format: None,
            sync_mode: None,
            enable_prompt_expansion: None,
        }
    }

    pub fn kind(&self) -> Kind {
        if self.image_urls.is_some() {
            Kind::ImageToImage
        } else {
            Kind::TextToImage
        }
    }

    /// Images this request produces (the API default is 1).
    /// Whether sending it reads local image files.
    pub fn reads_local_files(&self) -> bool {
        self.image_urls
            .iter()
            .flat_map(|urls| urls.iter())
            .any(|u| matches!(u, ImageInput::File { .. }))
    }

    pub fn images(&self) -> u32 {
        self.num_images.unwrap_or(1)
    }

    pub(crate) fn set(&mut self, value: &ParamValue) {
        match value {
            ParamValue::Prompt(p) => self.prompt = p.clone(),
            ParamValue::ImageUrls(u) => self.image_urls = Some(u.clone()),
            ParamValue::ImageSize(s) => self.image_size = Some(*s),
            ParamValue::Steps(n) => self.num_inference_steps = Some(*n),
            ParamValue::Guidance(g) => self.guidance_scale = Some(*g),
            ParamValue::Seed(s) => self.seed = Some(*s),
            ParamValue::NumImages(n) => self.num_images = Some(*n),
            ParamValue::SafetyChecker(b) => self.enable_safety_checker = Some(*b),
            ParamValue::OutputFormat(f) => self.output_format = Some(*f),
            ParamValue::SyncMode(b) => self.sync_mode = Some(*b),
            ParamValue::PromptExpansion(b) => self.enable_prompt_expansion = Some(*b),
        }
    }

    /// Every parameter but the seed, in a fixed order, unambiguously.
    ///
    /// The row key hashes this followed by [`Request::canonical_seed`]; keeping
    /// the seed last lets a seed sweep share the hash of everything before it.
    pub(crate) fn canonical_without_seed(&self) -> String {
        let mut out = String::with_capacity(self.prompt.len() + 128);
        out.push_str(self.kind().as_str());
        let mut put = |name: &str, value: &dyn fmt::Display| {
            let text = value.to_string();
            let _ = write!(out, "\n{name}:{}:{text}", text.len());
        };
        put("prompt", &self.prompt);
        if let Some(urls) = &self.image_urls {
            for u in urls.iter() {
                put("image_url", &u.written());
            }
        }
        if let Some(v) = self.image_size {
            put("image_size", &v);
        }
        if let Some(v) = self.num_inference_steps {
            put("num_inference_steps", &v);
        }
        if let Some(v) = self.guidance_scale {
            put("guidance_scale", &v);
        }
        if let Some(v) = self.num_images {
            put("num_images", &v);
        }
        if let Some(v) = self.enable_safety_checker {
            put("enable_safety_checker", &v);
        }
        if let Some(v) = self.output_format {
            put("output_format", &v.as_str());
        }
        if let Some(v) = self.sync_mode {
            put("sync_mode", &v);
        }
        if let Some(v) = self.enable_prompt_expansion {
            put("enable_prompt_expansion", &v);
        }
        out
    }

    pub(crate) fn canonical_seed(seed: Option<u64>) -> String {
        seed.map(|s| format!("\nseed:{s}")).unwrap_or_default()
    }
}

/// One parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Prompt(Arc<str>),
    ImageUrls(Arc<[ImageInput]>),
    ImageSize(ImageSize),
    Steps(u32),
    Guidance(f64),
    Seed(u64),
    NumImages(u32),
    SafetyChecker(bool),
    OutputFormat(OutputFormat),
    SyncMode(bool),
    PromptExpansion(bool),
}

impl ParamValue {
    /// Appends a short, file-name-safe rendering for row ids (`g1.5`,
    /// `1280x720`); `index` is the value's place in its sweep, from 1.
    pub(crate) fn push_id_part(&self, index: usize, out: &mut String) {
        use std::fmt::Write as _;
        let on_off = |b: &bool| if *b { "on" } else { "off" };
        let _ = match self {
            ParamValue::Prompt(_) => write!(out, "p{index}"),
            ParamValue::ImageUrls(_) => write!(out, "img{index}"),
            ParamValue::ImageSize(s) => write!(out, "{s}"),
            ParamValue::Steps(n) => write!(out, "steps{n}"),
            ParamValue::Guidance(g) => write!(out, "g{g}"),
            ParamValue::Seed(s) => write!(out, "s{s}"),
            ParamValue::NumImages(n) => write!(out, "n{n}"),
            ParamValue::SafetyChecker(b) => write!(out, "safety-{}", on_off(b)),
            ParamValue::OutputFormat(f) => write!(out, "{}", f.as_str()),
            ParamValue::SyncMode(b) => write!(out, "sync-{}", on_off(b)),
            ParamValue::PromptExpansion(b) => write!(out, "expand-{}", on_off(b)),
        };
    }
}

/// Parses the value of parameter `name`. The error is a message for the user.
pub(crate) fn parse(name: &str, node: &Node) -> Result<ParamValue, String> {
    Ok(match name {
        "prompt" => ParamValue::Prompt(parse_prompt(node)?),
        "image_urls" => ParamValue::ImageUrls(parse_image_urls(node)?),
        "image_size" => ParamValue::ImageSize(parse_image_size(node)?),
        "num_inference_steps" => ParamValue::Steps(parse_positive(node)?),
        "guidance_scale" => ParamValue::Guidance(parse_number(node)?),
        "seed" => ParamValue::Seed(parse_seed(node)?),
        "num_images" => ParamValue::NumImages(parse_num_images(node)?),
        "enable_safety_checker" => ParamValue::SafetyChecker(parse_bool(node)?),
        "output_format" => ParamValue::OutputFormat(parse_format(node)?),
        "sync_mode" => ParamValue::SyncMode(parse_bool(node)?),
        "enable_prompt_expansion" => ParamValue::PromptExpansion(parse_bool(node)?),
        other => return Err(format!("`{other}` is not a request parameter")),
    })
}

fn parse_prompt(node: &Node) -> Result<Arc<str>, String> {
    match &node.value {
        Value::Str(s) if s.trim().is_empty() => Err("the prompt is empty".into()),
        Value::Str(s) => Ok(Arc::from(s.as_str())),
        _ => Err(format!("expected text, found {}", node.describe())),
    }
}

/// An integer from YAML, or from CSV text.
fn integer(node: &Node) -> Result<i128, String> {
    match &node.value {
        Value::Int(i) => Ok(i128::from(*i)),
        Value::Str(s) => s
            .trim()
            .parse::<i128>()
            .map_err(|_| format!("expected an integer, found {}", node.describe())),
        _ => Err(format!("expected an integer, found {}", node.describe())),
    }
}

fn parse_positive(node: &Node) -> Result<u32, String> {
    match integer(node).map(u32::try_from) {
        Ok(Ok(n)) if n > 0 => Ok(n),
        _ => Err(format!(
            "expected a positive integer, found {}",
            node.describe()
        )),
    }
}

fn parse_num_images(node: &Node) -> Result<u32, String> {
    match parse_positive(node)? {
        n if n <= MAX_NUM_IMAGES => Ok(n),
        n => Err(format!(
            "at most {MAX_NUM_IMAGES} images per request, found {n}: add seeds instead"
        )),
    }
}

pub(crate) fn parse_seed(node: &Node) -> Result<u64, String> {
    let i = integer(node)?;
    match u64::try_from(i) {
        Ok(s) if s <= MAX_SEED => Ok(s),
        _ => Err(format!(
            "a seed is an integer from 0 to {MAX_SEED}, found {}",
            node.describe()
        )),
    }
}

pub(crate) fn parse_number(node: &Node) -> Result<f64, String> {
    let x = match &node.value {
        Value::Int(i) => *i as f64,
        Value::Float(x) => *x,
        Value::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("expected a number, found {}", node.describe()))?,
        _ => return Err(format!("expected a number, found {}", node.describe())),
    };
    if x.is_finite() {
        Ok(x)
    } else {
        Err(format!(
            "expected a finite number, found {}",
            node.describe()
        ))
    }
}

pub(super) fn parse_bool(node: &Node) -> Result<bool, String> {
    match &node.value {
        Value::Bool(b) => Ok(*b),
        Value::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(format!("expected true or false, found {}", node.describe())),
        },
        _ => Err(format!("expected true or false, found {}", node.describe())),
    }
}

fn parse_format(node: &Node) -> Result<OutputFormat, String> {
    match node.as_str().map(str::trim) {
        Some("jpeg") => Ok(OutputFormat::Jpeg),
        Some("png") => Ok(OutputFormat::Png),
        Some("jpg") => Err("`jpg` is not accepted by the API: did you mean `jpeg`?".into()),
        _ => Err(format!(
            "expected `jpeg` or `png`, found {}",
            node.describe()
        )),
    }
}

fn parse_image_size(node: &Node) -> Result<ImageSize, String> {
    let dims = |w: &Node, h: &Node| -> Result<ImageSize, String> {
        let side = |n: &Node, which: &str| {
            let v = integer(n).map_err(|e| format!("{which}: {e}"))?;
            match u32::try_from(v) {
                Ok(v) if CUSTOM_SIZE_RANGE.contains(&v) => Ok(v),
                _ => Err(format!(
                    "{which} must be from {} to {} pixels, found {}",
                    CUSTOM_SIZE_RANGE.start(),
                    CUSTOM_SIZE_RANGE.end(),
                    n.describe()
                )),
            }
        };
        Ok(ImageSize::Custom {
            width: side(w, "width")?,
            height: side(h, "height")?,
        })
    };
    match &node.value {
        Value::Str(s) => {
            let s = s.trim();
            if let Some(p) = SIZE_PRESETS.iter().find(|p| **p == s) {
                return Ok(ImageSize::Preset(p));
            }
            if let Some((w, h)) = s.split_once(['x', 'X']) {
                let cell = |t: &str| Node {
                    value: Value::Str(t.to_string()),
                    loc: node.loc.clone(),
                };
                if !w.is_empty() && !h.is_empty() && w.trim().chars().all(|c| c.is_ascii_digit()) {
                    return dims(&cell(w), &cell(h));
                }
            }
            let hint = match suggest(s, SIZE_PRESETS) {
                Some(p) => format!("did you mean `{p}`?"),
                None => format!(
                    "expected one of {}, or WIDTHxHEIGHT",
                    SIZE_PRESETS.join(", ")
                ),
            };
            Err(format!("unknown size \"{s}\": {hint}"))
        }
        Value::Map(entries) => {
            if let Some(k) = stray_key(entries, &["width", "height"]) {
                return Err(format!(
                    "a custom size has only `width` and `height`, found {}",
                    k.describe()
                ));
            }
            match (entry(entries, "width"), entry(entries, "height")) {
                (Some(w), Some(h)) => dims(w, h),
                _ => Err("a custom size needs both `width` and `height`".into()),
            }
        }
        _ => Err(format!(
            "expected a size name or {{width, height}}, found {}",
            node.describe()
        )),
    }
}

fn parse_image_urls(node: &Node) -> Result<Arc<[ImageInput]>, String> {
    let items: Vec<(String, &Node)> = match &node.value {
        // CSV cells (and YAML shorthand) separate several URLs with `|`.
        Value::Str(s) => s.split('|').map(|p| (p.trim().to_string(), node)).collect(),
        Value::List(list) => list
            .iter()
            .map(|n| match n.as_str() {
                Some(s) => Ok((s.trim().to_string(), n)),
                None => Err(format!("expected a URL or path, found {}", n.describe())),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(format!(
                "expected a list of URLs, found {}",
                node.describe()
            ))
        }
    };
    if items.is_empty() || items.len() > MAX_IMAGE_URLS {
        return Err(format!(
            "1 to {MAX_IMAGE_URLS} images are accepted, found {}",
            items.len()
        ));
    }
    items
        .into_iter()
        .map(|(text, at)| image_input(&text, at))
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::from)
}

fn image_input(text: &str, at: &Node) -> Result<ImageInput, String> {
    let lower = text.to_ascii_lowercase();
    if text.is_empty() {
        return Err("an image URL is empty".into());
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        if text.len() <= "https://".len() || text.contains(char::is_whitespace) {
            return Err(format!("`{text}` is not a valid URL"));
        }
        return Ok(ImageInput::Url(text.to_string()));
    }
    if lower.starts_with("data:") {
        return match text.split_once(',') {
            Some((head, body))
                if head.to_ascii_lowercase().starts_with("data:image/") && !body.is_empty() =>
            {
                Ok(ImageInput::Url(text.to_string()))
            }
            _ => Err("a data URI must look like `data:image/png;base64,...`".into()),
        };
    }
    if lower.contains("://") {
        return Err(format!(
            "`{text}`: only http(s) URLs, data: URIs and local files are accepted"
        ));
    }
    let path = at.loc.base_dir().join(text);
    // A regular file under the cap (checked before it is opened, so a FIFO
    // cannot hang planning), starting like an image.
    let mut head = [0u8; 12];
    let read = crate::disk::open_regular(&path, MAX_LOCAL_IMAGE_BYTES).and_then(|mut f| {
        use std::io::Read;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => {
                    return Err(crate::disk::ReadError {
                        path: path.clone(),
                        why: crate::disk::Why::Other(e),
                    })
                }
            }
        }
        Ok(n)
    });
    match read {
        Err(e) => Err(format!("local image {e}")),
        Ok(n) if image_mime(&head[..n]).is_none() => Err(format!(
            "local image {} is not a PNG, JPEG or WebP file",
            path.display()
        )),
        Ok(_) => Ok(ImageInput::File {
            written: text.to_string(),
            path,
        }),
    }
}

/// The MIME type of an image from its first bytes, for the formats the API takes.
pub fn image_mime(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}
