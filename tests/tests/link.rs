//! Share links: any state round-trips; any string, however broken or hostile, decodes to an error
//! that says what is wrong, never a panic; an altered link fails its checksum.

use carve_core::circuit::{Component, LinkState, ModelShape};
use proptest::prelude::*;

fn state() -> impl Strategy<Value = LinkState> {
    (
        prop_oneof![Just(String::new()), "https://[a-z]{1,12}\\.org/[a-zA-Z0-9_/.-]{0,40}", "/runs/[a-z]{1,8}/model/"],
        prop_oneof![Just(String::new()), "[0-9a-f]{16,64}"],
        prop_oneof![Just(String::new()), Just("ioi".to_string()), "[a-z_-]{1,20}"],
        // Any text a person could type, markup and quotes included.
        "[^\\p{Cc}]{0,200}",
        prop::collection::vec(any::<bool>(), 0..600),
    )
        .prop_map(|(model_url, model_sha256, task, prompt, mask)| LinkState { model_url, model_sha256, task, prompt, mask })
}

proptest! {
    #[test]
    fn round_trips(s in state()) {
        let link = s.encode("http://127.0.0.1:8080/");
        prop_assert!(link.starts_with("http://127.0.0.1:8080/#carve=1."));
        prop_assert_eq!(LinkState::decode(&link).unwrap(), s.clone());
        // The fragment alone, with or without '#', decodes too.
        let frag = s.encode_fragment();
        prop_assert_eq!(LinkState::decode(&frag).unwrap(), s.clone());
        prop_assert_eq!(LinkState::decode(&format!("#{frag}")).unwrap(), s);
    }

    #[test]
    fn any_string_decodes_without_panic(text in ".{0,300}") {
        let _ = LinkState::decode(&text);
        let _ = LinkState::decode(&format!("http://x/#carve={text}"));
        let _ = LinkState::decode(&format!("#carve=1.{text}"));
    }

    #[test]
    fn any_change_to_a_link_is_caught(s in state(), at in any::<prop::sample::Index>(), c in "[A-Za-z0-9_.=-]") {
        let frag = s.encode_fragment();
        let i = at.index(frag.len());
        let mut bad = frag.clone();
        bad.replace_range(i..i + 1, &c);
        if bad != frag {
            // Either refused, or (a change in the unchecked key/version spelling that still reads
            // the same) decoded to the same state: never a different state.
            if let Ok(got) = LinkState::decode(&bad) {
                prop_assert_eq!(got, s);
            }
        }
    }

    #[test]
    fn random_payloads_are_refused(payload in "[A-Za-z0-9_-]{0,300}") {
        let link = format!("#carve=1.{payload}.AAAAAAAA");
        prop_assert!(LinkState::decode(&link).is_err());
    }
}

fn sample() -> LinkState {
    LinkState {
        model_url: "https://example.org/ioi/model/".into(),
        model_sha256: "b179c9523d0e6a0f98a330c7562b6827".into(),
        task: "ioi".into(),
        prompt: "When Lisa and Kevin went to the park, Kevin gave a ball to".into(),
        mask: vec![true, false, true, true, false, false, true, true, true, false],
    }
}

#[test]
fn broken_links_say_what_is_wrong() {
    let good = sample().encode("http://127.0.0.1:8080/");
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "no `carve=` state"),
        ("http://127.0.0.1:8080/".into(), "no `carve=` state"),
        (good.replace("carve=1.", "carve=2."), "version"),
        (good[..good.len() - 3].to_string(), "checksum"),
        (good.rsplit_once('.').unwrap().0.to_string(), "version.payload.checksum"),
        (good.replace("carve=1.", "carve=1.%%"), "base64url"),
        ("x".repeat(70_000), "at most"),
    ];
    for (link, want) in cases {
        let e = LinkState::decode(&link).expect_err(&link[..link.len().min(80)]).to_string();
        assert!(e.contains(want), "{e} (wanted `{want}`)");
    }
}

/// A state that passes the checksum but carries hostile fields is refused field by field.
#[test]
fn hostile_fields_are_refused_or_kept_as_plain_text() {
    let mut s = sample();
    s.model_url = "javascript:alert(1)".into();
    assert!(LinkState::decode(&s.encode("http://h/")).unwrap_err().to_string().contains("http(s)"));
    let mut s = sample();
    s.model_sha256 = "<script>".into();
    assert!(LinkState::decode(&s.encode("http://h/")).unwrap_err().to_string().contains("hex"));
    let mut s = sample();
    s.prompt = "a\u{0}b".into();
    assert!(LinkState::decode(&s.encode("http://h/")).unwrap_err().to_string().contains("control"));
    // Markup in the prompt or task is data: it comes back byte for byte, for the page to show as text.
    let mut s = sample();
    s.prompt = "<script>alert('x')</script> & \"quotes\"".into();
    s.task = "<img src=x onerror=alert(1)>".into();
    assert_eq!(LinkState::decode(&s.encode("http://h/")).unwrap(), s);
}

#[test]
fn the_mask_maps_to_components_of_the_right_model() {
    let shape = ModelShape { n_heads: vec![4, 4], d_ff: vec![128, 128] };
    let removed = vec![Component::Head { layer: 0, head: 1 }, Component::Mlp { layer: 1 }];
    let mask = LinkState::mask_for(&shape, &removed);
    assert_eq!(mask.len(), 10);
    let s = LinkState { mask, ..sample() };
    let back = LinkState::decode(&s.encode("http://h/")).unwrap();
    assert_eq!(back.removed(&shape).unwrap(), removed);
    let other = ModelShape { n_heads: vec![4], d_ff: vec![128] };
    assert!(back.removed(&other).unwrap_err().to_string().contains("another model"));
}
