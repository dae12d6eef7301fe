import Foundation
import MMoERuntime

/// Text, SVG and HTML views of a `GateReport`.
enum GatesRendering {
    // MARK: text

    /// One table per level: a row per gate, a column per expert of the level ("-" where the
    /// gate does not mix that expert), then the gate's distribution figures.
    static func table(_ report: GateReport) -> String {
        var text = ""
        for (l, experts) in report.levels.enumerated() {
            let gates = report.gates.filter { $0.level == l }
            guard !gates.isEmpty else { continue }
            if report.levels.count > 1 { text += "level \(l)\n" }
            let nameWidth = max(8, gates.map(\.name.count).max() ?? 0)
            let cellWidth = max(6, (experts.map(\.count).max() ?? 0) + 1)
            func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
            text += pad("gate", nameWidth) + "  " + experts.map { pad($0, cellWidth) }.joined() + "  eff.p10 eff.p50 eff.p90  polarised\n"
            for gate in gates {
                var cells = [String](repeating: pad("-", cellWidth), count: experts.count)
                for (k, name) in gate.experts.enumerated() {
                    if let column = experts.firstIndex(of: name) {
                        cells[column] = pad(String(format: "%.3f", gate.meanWeights[k]), cellWidth)
                    }
                }
                let q = gate.effectiveExperts
                text += pad(gate.name, nameWidth) + "  " + cells.joined()
                text += String(format: "  %7.2f %7.2f %7.2f  %8.1f%%\n", q.p10, q.p50, q.p90, gate.polarisedShare * 100)
            }
        }
        return text
    }

    // MARK: colours

    /// A sequential blue scale (ColorBrewer "Blues", 9 classes), interpolated: light for 0, dark for 1.
    static let stops: [(Double, Double, Double)] = [
        (247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214), (66, 146, 198), (33, 113, 181), (8, 81, 156),
        (8, 48, 107),
    ]

    static func colour(_ value: Double) -> String {
        let v = min(1, max(0, value.isFinite ? value : 0)) * Double(stops.count - 1)
        let i = min(Int(v), stops.count - 2)
        let f = v - Double(i)
        let a = stops[i]
        let b = stops[i + 1]
        func mix(_ x: Double, _ y: Double) -> Int { Int((x + (y - x) * f).rounded()) }
        return String(format: "#%02x%02x%02x", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(
            of: ">", with: "&gt;"
        )
        .replacingOccurrences(of: "\"", with: "&quot;")
    }

    // MARK: SVG

    /// Every level as one panel, stacked, with one colour legend at the bottom.
    static func svg(_ report: GateReport, title: String) -> String {
        var panels: [(body: String, width: Int, height: Int)] = []
        for l in report.levels.indices where report.gates.contains(where: { $0.level == l }) {
            panels.append(panel(report, level: l))
        }
        let legendHeight = 56
        let width = max(420, panels.map(\.width).max() ?? 0)
        let height = 34 + panels.map(\.height).reduce(0, +) + legendHeight
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\""
        svg += " font-family=\"DejaVu Sans, Verdana, sans-serif\" font-size=\"12\">\n"
        svg += "<defs><pattern id=\"empty\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">"
        svg +=
            "<rect width=\"6\" height=\"6\" fill=\"#f2f2f2\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#c8c8c8\" "
            + "stroke-width=\"2\"/></pattern>\n"
        svg += "<linearGradient id=\"scale\" x1=\"0\" x2=\"1\" y1=\"0\" y2=\"0\">"
        for (i, _) in stops.enumerated() {
            let offset = Double(i) / Double(stops.count - 1)
            svg += "<stop offset=\"\(String(format: "%.3f", offset))\" stop-color=\"\(colour(offset))\"/>"
        }
        svg += "</linearGradient></defs>\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"12\" y=\"22\" font-size=\"15\" font-weight=\"bold\">\(escape(title))</text>\n"
        var y = 34
        for panel in panels {
            svg += "<g transform=\"translate(0,\(y))\">\n\(panel.body)</g>\n"
            y += panel.height
        }
        // Legend: the colour scale with ticks.
        let legendX = 12
        let legendWidth = 240
        svg += "<g transform=\"translate(\(legendX),\(y + 8))\">\n"
        svg += "<text x=\"0\" y=\"0\" dy=\"-2\" font-size=\"11\">mean gate weight</text>\n"
        svg += "<rect x=\"0\" y=\"4\" width=\"\(legendWidth)\" height=\"14\" fill=\"url(#scale)\" stroke=\"#888\" stroke-width=\"0.5\"/>\n"
        for tick in stride(from: 0.0, through: 1.0, by: 0.2) {
            let x = Int(tick * Double(legendWidth))
            svg += "<line x1=\"\(x)\" y1=\"18\" x2=\"\(x)\" y2=\"23\" stroke=\"#444\"/>"
            svg += "<text x=\"\(x)\" y=\"35\" text-anchor=\"middle\" font-size=\"10\">\(String(format: "%.1f", tick))</text>\n"
        }
        svg +=
            "<rect x=\"\(legendWidth + 24)\" y=\"4\" width=\"14\" height=\"14\" fill=\"url(#empty)\" stroke=\"#888\" stroke-width=\"0.5\"/>"
        svg += "<text x=\"\(legendWidth + 44)\" y=\"15\" font-size=\"11\">not mixed by this gate</text>\n"
        svg += "</g>\n</svg>\n"
        return svg
    }

    /// One level: heatmap of mean weights (rows gates, columns the level's experts), then per
    /// gate the effective-expert median, the polarised share and a histogram of the top weight.
    static func panel(_ report: GateReport, level l: Int) -> (body: String, width: Int, height: Int) {
        let experts = report.levels[l]
        let gates = report.gates.filter { $0.level == l }
        let cell = 58
        let rowHeight = 40
        let left = 16 + 8 * max(6, report.gates.map(\.name.count).max() ?? 0)  // the same in every panel
        let top = 46
        let statsX = left + cell * experts.count + 14
        let histX = statsX + 150
        let histWidth = 100
        let width = histX + histWidth + 20
        let height = top + rowHeight * gates.count + 18
        var s = ""
        let title =
            report.levels.count > 1 ? "level \(l): mean weight each gate gives each expert" : "mean weight each gate gives each expert"
        s += "<text x=\"12\" y=\"16\" font-size=\"13\">\(escape(title)) (\(report.examples) examples)</text>\n"
        for (e, name) in experts.enumerated() {
            s +=
                "<text x=\"\(left + e * cell + cell / 2)\" y=\"\(top - 8)\" text-anchor=\"middle\" "
                + "font-size=\"11\">\(escape(name))</text>\n"
        }
        s += "<text x=\"\(statsX)\" y=\"\(top - 8)\" font-size=\"11\">eff. experts p50</text>\n"
        s += "<text x=\"\(statsX + 96)\" y=\"\(top - 8)\" font-size=\"11\">&gt;0.9</text>\n"
        s += "<text x=\"\(histX)\" y=\"\(top - 8)\" font-size=\"11\">top weight 0 … 1</text>\n"
        for (r, gate) in gates.enumerated() {
            let y = top + r * rowHeight
            s += "<text x=\"\(left - 8)\" y=\"\(y + rowHeight / 2 + 4)\" text-anchor=\"end\">\(escape(gate.name))</text>\n"
            var byColumn = [Double?](repeating: nil, count: experts.count)
            for (k, name) in gate.experts.enumerated() {
                if let column = experts.firstIndex(of: name) { byColumn[column] = gate.meanWeights[k] }
            }
            for (e, value) in byColumn.enumerated() {
                let x = left + e * cell
                if let value {
                    s += "<rect x=\"\(x)\" y=\"\(y)\" width=\"\(cell - 2)\" height=\"\(rowHeight - 2)\" fill=\"\(colour(value))\"/>"
                    let ink = value > 0.5 ? "white" : "black"
                    s +=
                        "<text x=\"\(x + cell / 2 - 1)\" y=\"\(y + rowHeight / 2 + 4)\" text-anchor=\"middle\" "
                        + "fill=\"\(ink)\">\(String(format: "%.2f", value))</text>\n"
                } else {
                    s += "<rect x=\"\(x)\" y=\"\(y)\" width=\"\(cell - 2)\" height=\"\(rowHeight - 2)\" fill=\"url(#empty)\"/>\n"
                }
            }
            let q = gate.effectiveExperts
            s += "<text x=\"\(statsX)\" y=\"\(y + rowHeight / 2 + 4)\">\(String(format: "%.2f of %d", q.p50, gate.experts.count))</text>"
            s += "<text x=\"\(statsX + 96)\" y=\"\(y + rowHeight / 2 + 4)\">\(String(format: "%.0f%%", gate.polarisedShare * 100))</text>\n"
            // Histogram of the top expert's weight: 10 bins over [0, 1], bar heights relative to the fullest bin.
            let bins = gate.topWeightHistogram
            let most = max(1, bins.max() ?? 1)
            let barWidth = histWidth / max(1, bins.count)
            let base = y + rowHeight - 4
            s += "<line x1=\"\(histX)\" y1=\"\(base)\" x2=\"\(histX + histWidth)\" y2=\"\(base)\" stroke=\"#999\"/>"
            for (b, count) in bins.enumerated() where count > 0 {
                let h = max(1, (rowHeight - 8) * count / most)
                s += "<rect x=\"\(histX + b * barWidth)\" y=\"\(base - h)\" width=\"\(barWidth - 1)\" height=\"\(h)\" fill=\"#4a4a4a\"/>"
            }
            s += "\n"
        }
        return (s, width, height)
    }

    // MARK: HTML

    /// One self-contained page: the SVG of every level, the tables, unused experts and slices.
    static func html(_ report: GateReport, title: String, slices: [(value: Int64, report: GateReport)], feature: String?) -> String {
        var page = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>\(escape(title))</title>\n"
        page += "<style>body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:24px;color:#222}pre{background:#f6f6f6;padding:8px}"
        page += "h2{margin-top:28px}</style></head><body>\n"
        page += "<h1>\(escape(title))</h1>\n"
        page += "<p>Effective experts = exp(−Σ w ln w) per example (1: one expert takes all; E: spread evenly over E). "
        page += "Polarised: top expert &gt; \(GateReport.polarisedAbove) of the weight.</p>\n"
        page += svg(report, title: "all \(report.examples) examples") + "\n"
        page += "<pre>\(escape(table(report)))</pre>\n"
        page +=
            "<h2>Unused experts</h2>\n<p>"
            + (report.unused.isEmpty
                ? "none"
                : report.unused.map { "level \($0.level) \(escape($0.expert)) (\(String(format: "%.3f", $0.meanWeight)))" }.joined(
                    separator: ", "))
            + "</p>\n"
        if let feature {
            page += "<h2>By \(escape(feature))</h2>\n"
            for slice in slices {
                page += "<h3>\(escape(feature)) = \(slice.value) (\(slice.report.examples) examples)</h3>\n"
                page += svg(slice.report, title: "\(feature) = \(slice.value)") + "\n"
            }
        }
        page += "</body></html>\n"
        return page
    }
}
