using System.CommandLine;
using System.Globalization;
using Bursar.Core.Caching.Semantic;

namespace Bursar.Cli.Commands;

internal static class EvalCommand
{
    public static Command Create()
    {
        var eval = new Command("eval", "Measure a lever on labeled data");
        var pairs = new Option<FileInfo>("--pairs") { Description = "Labeled pairs: QQP-style JSONL(.gz) {a, b, duplicate} or GPTCache's [{origin, similar}]", Required = true };
        var target = new Option<double>("--target-precision") { Description = "Precision the chosen threshold must reach on the calibration half", DefaultValueFactory = _ => 0.95 };
        var generatorOption = new Option<string>("--generator") { Description = "local (built-in) or onnx (with --onnx-model and --onnx-vocab)", DefaultValueFactory = _ => "local" };
        var onnxModel = new Option<FileInfo?>("--onnx-model") { Description = "A BERT-style sentence encoder in ONNX format" };
        var onnxVocab = new Option<FileInfo?>("--onnx-vocab") { Description = "Its vocab.txt" };
        var semantic = new Command("semantic-cache", "Precision, recall and false-positive rate of the semantic cache per threshold, and the threshold that meets the target precision") { pairs, target, generatorOption, onnxModel, onnxVocab };
        semantic.SetAction((pr, ct) =>
        {
            var f = pr.GetValue(pairs)!;
            if (!f.Exists) { Console.Error.WriteLine($"No such file: {f.FullName}"); return Task.FromResult(2); }
            var data = SemanticCacheEvaluation.Load(f.FullName);
            Bursar.Embeddings.Onnx.OnnxEmbeddingGenerator? onnx = null;
            if (pr.GetValue(generatorOption) == "onnx")
            {
                if (pr.GetValue(onnxModel) is not { } m || pr.GetValue(onnxVocab) is not { } v) { Console.Error.WriteLine("--generator onnx needs --onnx-model and --onnx-vocab"); return Task.FromResult(2); }
                try { onnx = new Bursar.Embeddings.Onnx.OnnxEmbeddingGenerator(m.FullName, v.FullName); }
                catch (Exception e) when (e is FileNotFoundException or InvalidDataException) { Console.Error.WriteLine(e.Message); return Task.FromResult(2); }
            }
            using var _ = onnx;
            Console.WriteLine($"{data.Count:N0} pairs ({data.Count(p => p.Duplicate):N0} duplicates) from {f.Name}; generator: {(onnx is null ? HashedNGramEmbeddingGenerator.Name : "onnx " + onnx.Metadata.DefaultModelId)}, guards: numbers, negation, named entities");
            var result = SemanticCacheEvaluation.Run(data, pr.GetValue(target), progress: new Progress<int>(n => Console.Error.Write($"\r  embedding {n:N0}/{data.Count:N0} pairs")), embed: onnx is null ? null : onnx.Embed);
            Console.Error.WriteLine();
            Console.WriteLine($"\nCalibration half ({result.CalibrationPairs:N0} pairs; IDF fitted here):");
            Console.WriteLine($"{"threshold",9} {"precision",10} {"recall",8} {"FP rate",8} {"hits",8}");
            foreach (var m in result.Calibration.Where((_, i) => i % 6 == 0 || i >= 90))
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{m.Threshold,9:F3} {m.Precision,10:P1} {m.Recall,8:P1} {m.FalsePositiveRate,8:P2} {m.TruePositives + m.FalsePositives,8:N0}"));
            Console.WriteLine($"\nHeld-out half ({result.TestPairs:N0} pairs), for reading only (the threshold is chosen on the calibration half):");
            Console.WriteLine($"{"threshold",9} {"precision",10} {"recall",8} {"hits",8}");
            foreach (var m in result.TestCurve.Where((_, i) => i >= 84 && i % 2 == 0))
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{m.Threshold,9:F3} {m.Precision,10:P1} {m.Recall,8:P1} {m.TruePositives + m.FalsePositives,8:N0}"));
            Console.WriteLine($"\nGuards rejected {result.GuardRejections:N0} pairs.");
            if (result.Chosen is { } c && result.Test is { } t)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Chosen threshold {c.Threshold:F3} (precision {c.Precision:P1} on calibration, target {result.TargetPrecision:P0})."));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Held-out half ({result.TestPairs:N0} pairs): precision {t.Precision:P1}, recall {t.Recall:P1}, false-positive rate {t.FalsePositiveRate:P2} ({t.TruePositives:N0} right hits, {t.FalsePositives:N0} wrong)."));
            }
            else
            {
                Console.WriteLine($"No threshold reaches {result.TargetPrecision:P0} precision with at least 20 hits on the calibration half: do not enable the semantic cache with this generator on this traffic.");
            }
            return Task.FromResult(0);
        });
        eval.Subcommands.Add(semantic);

        var data = new Option<string>("--data") { Description = "RouteLLM-style labeled prompts: a folder of mmlu_<subject>.csv, or gsm8k_responses.csv (or its folder)", Required = true };
        var routing = new Command("routing", "Train the complexity router on one half of labeled prompts and report APGR, CPT(50%), CPT(80%) on the other half, against prompt length, random and oracle") { data };
        routing.SetAction((pr, ct) =>
        {
            var path = pr.GetValue(data)!;
            if (!Directory.Exists(path) && !File.Exists(path)) { Console.Error.WriteLine($"No such file or folder: {path}"); return Task.FromResult(2); }
            var prompts = Bursar.Core.Routing.RoutingDataset.Load(path);
            Console.WriteLine($"{prompts.Count:N0} prompts ({prompts.Select(p => p.Category).Distinct().Count()} categories) from {path}, contaminated prompts dropped");
            var result = Bursar.Core.Routing.RoutingEvaluation.Run(prompts);
            Console.WriteLine($"train {result.Train:N0} / test {result.Test:N0} (disjoint halves); text-model share chosen by 3-fold CV on the training half: {result.TextShare.ToString(CultureInfo.InvariantCulture)}\n");
            Console.WriteLine($"{"router",-26} {"APGR",6} {"CPT(50%)",9} {"CPT(80%)",9}");
            foreach (var m in result.Routers)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{m.Router,-26} {m.Apgr,6:F3} {(m.Cpt50 is { } a ? a.ToString("P1", CultureInfo.InvariantCulture) : "-"),9} {(m.Cpt80 is { } b ? b.ToString("P1", CultureInfo.InvariantCulture) : "-"),9}"));
            var q = result.Routers[0];
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"\nweak model quality {q.QualityWeak:P1}, strong {q.QualityStrong:P1}; cost saved at 95% of strong-model quality (strong call = 20x weak): {result.CostSavedAt95Percent:P1}"));
            return Task.FromResult(0);
        });
        eval.Subcommands.Add(routing);
        return eval;
    }
}
