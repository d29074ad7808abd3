#[test]
fn scratch_case() {
    #[allow(unused_imports)]
    use AnalysisPhase::*;
    use Op::*;
    let strategy = "    blueGreen:\n      activeService: a\n      previewService: p\n      autoPromotionEnabled: false\n      scaleDownDelaySeconds: 0\n      previewReplicaCount: 0\n      prePromotionAnalysis: {templates: [{templateName: pre}]}\n";
    let ops = vec![
    NewImage {
        never_ready: false,
    },
    PromoteFull,
    Scale(
        0,
    ),
];
    let r = run_history(strategy, Kind::BlueGreen, 1, None, false, ops);
    if let Err(e) = r { panic!("{e}"); }
}
