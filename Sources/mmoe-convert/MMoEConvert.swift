import ArgumentParser

/// `mmoe-convert`: convert multi-task ranking checkpoints to swift-mmoe models, run them and
/// prove parity.
@main
struct MMoEConvert: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "mmoe-convert",
        abstract: "Convert multi-task MoE ranking models (MMoE, PLE, ESMM, ...) to swift-mmoe, run them, and check parity.",
        discussion: """
            A typical session:
              mmoe-convert convert model.pt --spec conversion.json -o model.mmoe
              mmoe-convert inspect model.mmoe
              mmoe-convert predict model.mmoe --inputs inputs.npz -o predictions.npz
              mmoe-convert verify model.mmoe --inputs inputs.npz --expected outputs.npz

            Exit codes: 0 success; 1 verification outside tolerance or checksum mismatch;
            2 the input could not be used (damaged file, invalid model, mismatch, bad batch);
            64 usage error (unknown option, missing file).
            """,
        version: version,
        subcommands: [Convert.self, Inspect.self, Predict.self, Verify.self, Gates.self, Rank.self, Bench.self]
    )
}
