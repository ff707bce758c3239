//! Edge links and mask files: any state round-trips, a mask made for another model is refused by
//! its edge count, a mask too long for a link is left out of it, and broken or hostile text is an
//! error that says what is wrong, never a panic. Version-1 links read as before.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::mask::EdgeLayout;

fn sample(n: usize, rng: &mut StdRng) -> EdgeLinkState {
    EdgeLinkState {
        model_url: "/run/model/".into(),
        model_sha256: "5840a74165c49f9e".into(),
        task: "ioi".into(),
        prompt: "When Lisa and Kevin went to the park, Kevin gave a ball to".into(),
        n_edges: n,
        edges: Some((0..n).map(|_| rng.random_bool(0.3)).collect()),
    }
}

/// A version-2 link with this payload and mask text, signed as carve signs it.
fn signed(payload: &str, bits: &str) -> String {
    format!("#carve=2.{}.{bits}.{}", B64.encode(payload), check(payload.as_bytes(), bits))
}

/// tiny-llama's edge layout (2 layers of 4 query heads, 2 KV heads): 82 edges.
fn tiny() -> EdgeLayout {
    EdgeLayout::new(&[4, 4], &[2, 2], &[true, true], false).unwrap()
}

#[test]
fn edge_states_round_trip() {
    let mut rng = StdRng::seed_from_u64(7);
    for n in [0, 1, 7, 8, 9, 50, 82, 1000, 4097] {
        let mut s = sample(n, &mut rng);
        s.prompt = format!("<script>alert({n})</script> & \"é\"\n\t{}", "x".repeat(rng.random_range(0..100)));
        let (link, whole) = s.encode("http://127.0.0.1:8080/#old");
        assert!(whole && link.starts_with("http://127.0.0.1:8080/#carve=2."), "{n}: {link}");
        assert_eq!(EdgeLinkState::decode(&link).unwrap(), s, "{n}");
        assert_eq!(Link::decode(&link).unwrap(), Link::Edges(s.clone()), "{n}");
        let frag = link.split_once('#').unwrap().1;
        assert_eq!(EdgeLinkState::decode(frag).unwrap(), s, "{n}: the fragment alone");
    }
}

#[test]
fn version_1_links_read_as_before() {
    let s = LinkState {
        model_url: "https://example.org/ioi/model/".into(),
        model_sha256: "b179c9523d0e6a0f98a330c7562b6827".into(),
        task: "ioi".into(),
        prompt: "p".into(),
        mask: vec![true, false, true, true, false, false, true, true, true, false],
    };
    let link = s.encode("http://h/");
    assert!(link.contains("#carve=1."));
    assert_eq!(Link::decode(&link).unwrap(), Link::Components(s.clone()));
    assert_eq!(LinkState::decode(&link).unwrap(), s);
    // A version-1 payload relabelled version 2 passes no check of version 2.
    let relabelled = link.replace("carve=1.", "carve=2.");
    for e in [LinkState::decode(&relabelled).unwrap_err(), Link::decode(&relabelled).unwrap_err()] {
        assert!(e.to_string().contains("version"), "{e}");
    }
    let e = Link::decode(&link.replace("carve=1.", "carve=3.")).unwrap_err().to_string();
    assert!(e.contains("versions 1 and 2"), "{e}");
}

#[test]
fn a_mask_for_another_model_is_refused_by_its_edge_count() {
    let mut rng = StdRng::seed_from_u64(1);
    let layout = tiny();
    assert_eq!(layout.n_edges(), 82);
    let right = sample(82, &mut rng);
    let back = EdgeLinkState::decode(&right.encode("http://h/").0).unwrap();
    assert_eq!(back.edges_for(&layout).unwrap(), right.edges.as_deref());
    for n in [0, 50, 81, 83, 70_651] {
        let wrong = EdgeLinkState::decode(&sample(n, &mut rng).encode("http://h/").0).unwrap();
        let e = wrong.edges_for(&layout).unwrap_err().to_string();
        assert!(e.contains(&format!("{n} edges, the model 82")) && e.contains("another model"), "{e}");
    }
}

#[test]
fn a_mask_too_long_for_a_link_is_left_out() {
    let mut rng = StdRng::seed_from_u64(2);
    let s = sample(82, &mut rng);
    let (whole, in_link) = s.encode_within("http://h/", 10_000);
    assert!(in_link);
    let (short, in_link) = s.encode_within("http://h/", whole.len() - 1);
    assert!(!in_link && short.len() < whole.len(), "{short}");
    let back = EdgeLinkState::decode(&short).unwrap();
    assert_eq!((back.n_edges, back.edges.as_ref()), (82, None));
    assert_eq!(back.edges_for(&tiny()).unwrap(), None);
    // Its file carries it instead, checked against the model's hash and layout.
    let sha = "5840a74165c49f9e0123456789abcdef5840a74165c49f9e0123456789abcdef";
    let file = EdgeMaskFile { model_sha256: sha[..16].into(), edges: s.edges.clone().unwrap() };
    let read = EdgeMaskFile::from_json(&file.to_json()).unwrap();
    assert_eq!(read, file);
    assert_eq!(read.edges_for(sha, &tiny()).unwrap(), s.edges.as_deref().unwrap());
    let e = read.edges_for(&sha.replace('5', "6"), &tiny()).unwrap_err().to_string();
    assert!(e.contains("made for the model with sha256 5840a74165c49f9e"), "{e}");
    let other = EdgeLayout::new(&[4], &[2], &[true], false).unwrap();
    let e = read.edges_for(sha, &other).unwrap_err().to_string();
    assert!(e.contains(&format!("82 edges, the model {}", other.n_edges())), "{e}");
}

/// How long an edge link gets: the bits take ⌈⌈n/8⌉·4/3⌉ characters, six edges a character.
#[test]
fn links_of_ten_thousand_and_of_smollm2s_edges_fit() {
    let mut rng = StdRng::seed_from_u64(3);
    let base = "http://127.0.0.1:8080/";
    for n in [10_000, 70_651] {
        let s = sample(n, &mut rng);
        let (link, in_link) = s.encode(base);
        let bits = (n.div_ceil(8) * 4).div_ceil(3);
        let frag = link.split_once('#').unwrap().1;
        assert_eq!(frag.split('.').nth(2).unwrap().len(), bits);
        assert!(in_link && link.len() <= MAX_LINK_CHARS, "{n} edges: {} characters", link.len());
        println!("{n} edges: a link of {} characters ({bits} of them the mask)", link.len());
        assert_eq!(EdgeLinkState::decode(&link).unwrap(), s);
    }
    // The most edges a link holds with this state: past that, the mask goes to a file.
    let fixed = sample(0, &mut rng).encode(base).0.len();
    let most = (MAX_LINK_CHARS - fixed - 8) * 6;
    println!("a link holds up to about {most} edges ({MAX_LINK_CHARS} characters)");
    let over = sample(most + 600, &mut rng);
    let (link, in_link) = over.encode(base);
    assert!(!in_link && link.len() < 300, "{} characters", link.len());
}

/// The link with one character of its mask changed.
fn flip_bit_char(link: &str) -> String {
    let (head, sum) = link.rsplit_once('.').unwrap();
    let (head, bits) = head.rsplit_once('.').unwrap();
    let c = if bits.starts_with('A') { "B" } else { "A" };
    format!("{head}.{c}{}.{sum}", &bits[1..])
}

#[test]
fn broken_edge_links_say_what_is_wrong() {
    let mut rng = StdRng::seed_from_u64(4);
    let (good, _) = sample(82, &mut rng).encode("http://h/");
    let p = |e: usize| format!(r#"{{"m":"/run/model/","h":"5840a74165c49f9e","t":"ioi","p":"x","e":{e}}}"#);
    let cases: Vec<(String, &str)> = vec![
        (good[..good.len() - 2].to_string(), "checksum"),
        (flip_bit_char(&good), "checksum"),
        (good.rsplit_once('.').unwrap().0.to_string(), "payload.mask.checksum"),
        (signed(&p(82), "AAAA"), "bytes for 82 edges"),
        (signed(&p(3), "Dw"), "bits past its last edge"),
        (signed(&p(8), "%%"), "not base64url"),
        (signed(&p(usize::MAX / 2), ""), "claims"),
        (signed(r#"{"m":"javascript:alert(1)","h":"","t":"","p":"","e":0}"#, ""), "http(s)"),
        (signed(r#"{"m":"","h":"<script>","t":"","p":"","e":0}"#, ""), "hex"),
        (signed(r#"{"m":"","h":"","t":"","p":"a\u0000b","e":0}"#, ""), "control"),
        (signed(r#"{"m":"","h":"","t":"","p":"","n":1,"k":"AQ"}"#, ""), "version-2"),
        ("#carve=2.x".into(), "payload.mask.checksum"),
        ("x".repeat(MAX_LINK_CHARS + 1), "at most"),
    ];
    for (link, want) in cases {
        let e = Link::decode(&link).expect_err(&link[..link.len().min(80)]).to_string();
        assert!(e.contains(want), "{e} (wanted `{want}`)");
    }
    // Markup is data: it comes back as it went in, for the page to show as text.
    let ok = signed(r#"{"m":"","h":"","t":"<img src=x onerror=alert(1)>","p":"<b>","e":0}"#, "");
    let Link::Edges(s) = Link::decode(&ok).unwrap() else { panic!("not an edge link") };
    assert_eq!((s.task.as_str(), s.prompt.as_str(), s.edges), ("<img src=x onerror=alert(1)>", "<b>", Some(vec![])));
}

#[test]
fn any_change_to_an_edge_link_is_caught_and_no_text_panics() {
    let mut rng = StdRng::seed_from_u64(5);
    let s = sample(50, &mut rng);
    let frag = s.encode("").0.trim_start_matches('#').to_string();
    let alphabet: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=".chars().collect();
    for i in 0..frag.len() {
        for _ in 0..4 {
            let mut bad = frag.clone();
            bad.replace_range(i..i + 1, &alphabet[rng.random_range(0..alphabet.len())].to_string());
            if let Ok(got) = Link::decode(&bad) {
                assert_eq!(got, Link::Edges(s.clone()), "{bad}");
            }
        }
    }
    for _ in 0..2000 {
        let len = rng.random_range(0..200);
        let text: String = (0..len).map(|_| char::from_u32(rng.random_range(0..0x3000)).unwrap_or('.')).collect();
        for t in [text.clone(), format!("#carve=2.{text}"), format!("#carve={text}")] {
            let _ = Link::decode(&t);
            let _ = EdgeMaskFile::from_json(&t);
        }
    }
}

#[test]
fn broken_mask_files_say_what_is_wrong() {
    let j = |sha: &str, n: usize, mask: &str| format!(r#"{{"format":"carve-edge-mask","version":1,"model_sha256":"{sha}","edges":{n},"mask":"{mask}"}}"#);
    let sha = "5840a74165c49f9e";
    let cases = [
        ("{".to_string(), "not a carve edge mask"),
        (j(sha, 8, "_w").replace("carve-edge-mask", "carve-circuit"), "this carve reads"),
        (j("<b>", 8, "_w"), "hex"),
        (j(sha, 9, "_w"), "bytes for 9 edges"),
        (j(sha, 3, "Dw"), "bits past its last edge"),
        (j(sha, usize::MAX / 2, ""), "claims"),
        (" ".repeat(MAX_MASK_FILE_CHARS + 1), "at most"),
    ];
    for (text, want) in cases {
        let e = EdgeMaskFile::from_json(&text).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("edge mask file"), "{e} (wanted `{want}`)");
    }
    assert_eq!(EdgeMaskFile::from_json(&j(sha, 8, "vw")).unwrap().edges, vec![true, true, true, true, true, true, false, true]);
}
