//! Skull stripping against the phantom's truth: whole heads (CSF around the brain, skull with
//! its marrow, muscle, fat, skin, noise in the air) stripped to a brain mask that is compared
//! with the brain the phantom was made of; and the test that tells a stripped series from a
//! head.

use nvnet::data::synth::{self, Anatomy};
use nvnet::prepare::skull::{already_stripped, brain_mask};
use nvnet::{LabelConvention, Modality};

fn dice(a: &[bool], b: &[u8]) -> f64 {
    let both = a.iter().zip(b).filter(|(x, y)| **x && **y != 0).count();
    let na = a.iter().filter(|x| **x).count();
    let nb = b.iter().filter(|y| **y != 0).count();
    2.0 * both as f64 / (na + nb) as f64
}

#[test]
fn heads_are_stripped_to_their_brain() {
    let mut report = Vec::new();
    for (seed, index) in [(21, 0), (22, 3)] {
        let shape = synth::BRATS_SHAPE;
        let head = synth::generate_anatomy(
            seed,
            index,
            shape,
            LabelConvention::Brats2018,
            Anatomy::Head,
        );
        let g = &head.geometry;
        let values: Vec<(Modality, Vec<f32>)> = head
            .images
            .iter()
            .map(|(m, v)| (*m, v.iter().map(|&x| x as f32).collect()))
            .collect();
        let series: Vec<(Modality, &[f32])> =
            values.iter().map(|(m, v)| (*m, v.as_slice())).collect();
        let t = std::time::Instant::now();
        let mask = brain_mask(&series, g.dims, g.spacing());
        let seconds = t.elapsed().as_secs_f64();
        let d = dice(&mask, &head.brain);
        let t1ce = &values[1].1;
        report.push(format!(
            "phantom ({seed}, {index}): brain-mask Dice {d:.4} ({} voxels against {} true, {seconds:.1} s)",
            mask.iter().filter(|x| **x).count(),
            head.brain.iter().filter(|x| **x != 0).count()
        ));
        assert!(
            !already_stripped(t1ce, g.dims, g.spacing()),
            "a head taken for a stripped brain"
        );
        assert!(d >= 0.95, "{}", report.join("\n"));
        // The same case without its head is found stripped.
        let brain = synth::generate(seed, index, shape, LabelConvention::Brats2018);
        let t1ce: Vec<f32> = brain.images[1].1.iter().map(|&x| x as f32).collect();
        assert!(
            already_stripped(&t1ce, g.dims, g.spacing()),
            "a brain not found stripped"
        );
        assert_eq!(brain.seg, head.seg, "the head changed the brain's labels");
    }
    eprintln!("{}", report.join("\n"));
}
