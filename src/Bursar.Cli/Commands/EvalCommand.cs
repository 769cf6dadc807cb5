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
        var generatorOption = new Option<string>("--generator") { Description = "local (built-in), minilm (the MiniLM encoder shipped with bursar) or onnx (with --onnx-model and --onnx-vocab)", DefaultValueFactory = _ => "local" };
        var onnxModel = new Option<FileInfo?>("--onnx-model") { Description = "A BERT-style sentence encoder in ONNX format" };
        var onnxVocab = new Option<FileInfo?>("--onnx-vocab") { Description = "Its vocab.txt" };
        var dataDir = new Option<string>("--data-dir") { Description = "For minilm: the data directory it is extracted into (models/)", DefaultValueFactory = _ => ".bursar" };
        var guardsOption = new Option<string>("--guards") { Description = $"Guards applied: all, none, the encoder's default set (default), or a comma list of {string.Join(", ", SemanticGuards.Names)}", DefaultValueFactory = _ => "default" };
        var vectorCache = new Option<FileInfo?>("--vector-cache") { Description = "A file keeping the embeddings between runs (the texts' vectors, written after embedding, read first): another guard set or target does not embed again" };
        var samples = new Option<int>("--samples") { Description = "False positives of the held-out half to print", DefaultValueFactory = _ => 15 };
        var semantic = new Command("semantic-cache", "Precision, recall and false-positive rate of the semantic cache per threshold, the threshold that meets the target precision, and what each guard does") { pairs, target, generatorOption, onnxModel, onnxVocab, dataDir, guardsOption, samples, vectorCache };
        semantic.SetAction((pr, ct) =>
        {
            var f = pr.GetValue(pairs)!;
            if (!f.Exists) { Console.Error.WriteLine($"No such file: {f.FullName}"); return Task.FromResult(2); }
            var data = SemanticCacheEvaluation.Load(f.FullName);
            Bursar.Embeddings.Onnx.OnnxEmbeddingGenerator? onnx = null;
            var generator = pr.GetValue(generatorOption);
            try
            {
                switch (generator)
                {
                    case "onnx":
                        if (pr.GetValue(onnxModel) is not { } m || pr.GetValue(onnxVocab) is not { } v) { Console.Error.WriteLine("--generator onnx needs --onnx-model and --onnx-vocab"); return Task.FromResult(2); }
                        onnx = new Bursar.Embeddings.Onnx.OnnxEmbeddingGenerator(m.FullName, v.FullName);
                        break;
                    case "minilm":
                        onnx = Bursar.Embeddings.Onnx.MiniLmModel.Load(pr.GetValue(dataDir)!);
                        break;
                    case "local":
                        break;
                    default:
                        Console.Error.WriteLine($"--generator must be local, minilm or onnx, not '{generator}'");
                        return Task.FromResult(2);
                }
            }
            catch (Exception e) when (e is FileNotFoundException or InvalidDataException) { Console.Error.WriteLine(e.Message); return Task.FromResult(2); }
            using var _ = onnx;
            int guards;
            try
            {
                guards = pr.GetValue(guardsOption) switch
                {
                    "all" => SemanticGuards.All,
                    "none" => 0,
                    "default" => generator == "minilm" ? SemanticEncoder.MiniLmGuards : SemanticGuards.All,
                    var list => SemanticGuards.Mask(list!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)),
                };
            }
            catch (ArgumentException e) { Console.Error.WriteLine(e.Message); return Task.FromResult(2); }
            var guardNames = SemanticGuards.Names.Where((_, i) => (guards & (1 << i)) != 0).ToArray();
            Console.WriteLine($"{data.Count:N0} pairs ({data.Count(p => p.Duplicate):N0} duplicates) from {f.Name}; generator: {(onnx is null ? HashedNGramEmbeddingGenerator.Name : "onnx " + onnx.Metadata.DefaultModelId)}, guards: {(guardNames.Length == 0 ? "none" : string.Join(", ", guardNames))}");
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            Func<IReadOnlyList<string>, float[][]>? embedBatch = onnx is null ? null : onnx.EmbedBatch;
            Dictionary<string, float[]>? cached = null;
            if (onnx is not null && pr.GetValue(vectorCache) is { } cacheFile)
            {
                cached = cacheFile.Exists ? ReadVectors(cacheFile.FullName) : new Dictionary<string, float[]>(StringComparer.Ordinal);
                var missing = data.SelectMany(p => new[] { p.A, p.B }).Where(t => !cached.ContainsKey(t)).Distinct(StringComparer.Ordinal).ToArray();
                if (missing.Length > 0)
                {
                    var fresh = new System.Collections.Concurrent.ConcurrentDictionary<string, float[]>(StringComparer.Ordinal);
                    var done = 0;
                    var clock = System.Diagnostics.Stopwatch.StartNew();
                    Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(0, missing.Length, 32), r =>
                    {
                        var batch = missing[r.Item1..r.Item2];
                        var v = onnx.EmbedBatch(batch);
                        for (var i = 0; i < batch.Length; i++) fresh[batch[i]] = v[i];
                        // the encoder's pass over every text takes minutes: say how far it is and when it should end
                        var n = Interlocked.Add(ref done, batch.Length);
                        if (n / 2_000 != (n - batch.Length) / 2_000 || n == missing.Length)
                        {
                            var left = TimeSpan.FromSeconds(clock.Elapsed.TotalSeconds / n * (missing.Length - n));
                            Console.Error.Write(string.Create(CultureInfo.InvariantCulture, $"\r  embedding {n:N0} of {missing.Length:N0} texts ({(double)n / missing.Length:P0}, {n / clock.Elapsed.TotalSeconds:F0}/s, about {left.TotalMinutes:F0} min left)   "));
                        }
                    });
                    Console.Error.WriteLine();
                    foreach (var (k, v) in fresh) cached[k] = v;
                    WriteVectors(cacheFile.FullName, cached);
                }
                var all = cached;
                embedBatch = texts => texts.Select(t => all[t]).ToArray();
            }
            var result = SemanticCacheEvaluation.Run(data, pr.GetValue(target), progress: new Progress<int>(n => Console.Error.Write($"\r  embedding {n:N0}")),
                embedBatch: embedBatch, guards: guards);
            Console.Error.WriteLine($"\r  scored in {System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds:F0} s");
            Console.WriteLine($"\nCalibration half ({result.CalibrationPairs:N0} pairs):");
            Console.WriteLine($"{"threshold",9} {"precision",10} {"recall",8} {"FP rate",8} {"hits",8}");
            foreach (var m in result.Calibration.Where((_, i) => i % 6 == 0 || i >= 90))
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{m.Threshold,9:F3} {m.Precision,10:P1} {m.Recall,8:P1} {m.FalsePositiveRate,8:P2} {m.TruePositives + m.FalsePositives,8:N0}"));
            Console.WriteLine($"\nHeld-out half ({result.TestPairs:N0} pairs), for reading only (the threshold is chosen on the calibration half):");
            Console.WriteLine($"{"threshold",9} {"precision",10} {"recall",8} {"hits",8}");
            foreach (var m in result.TestCurve.Where((_, i) => i >= 60 && i % 2 == 0))
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
            var at = result.Chosen?.Threshold ?? 0.95f;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"\nEach guard at threshold {at:F3} (with it / without it; keep it where it raises calibration precision by more than it costs recall):"));
            Console.WriteLine($"{"guard",10} {"cal P",14} {"cal R",14} {"held-out P",14} {"held-out R",14} keep");
            foreach (var g in result.Guards)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{g.Guard,10} {g.CalibrationWith.Precision,6:P1}/{g.CalibrationWithout.Precision,6:P1} {g.CalibrationWith.Recall,6:P1}/{g.CalibrationWithout.Recall,6:P1} {g.TestWith.Precision,6:P1}/{g.TestWithout.Precision,6:P1} {g.TestWith.Recall,6:P1}/{g.TestWithout.Recall,6:P1} {(g.Keep ? "yes" : "no")}"));
            if (result.FalsePositives.Count > 0 && pr.GetValue(samples) > 0)
            {
                Console.WriteLine($"\nFalse positives on the held-out half (labelled not duplicate, served), highest score first:");
                foreach (var (a, b, score) in result.FalsePositives.Take(pr.GetValue(samples)))
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {score:F3}  {a}  |  {b}"));
            }
            if (result.GuardedDuplicates.Count > 0 && pr.GetValue(samples) > 0)
            {
                Console.WriteLine($"\nDuplicates above the threshold that a guard rejected:");
                foreach (var (a, b, guard) in result.GuardedDuplicates.Take(pr.GetValue(samples)))
                    Console.WriteLine($"  [{guard}]  {a}  |  {b}");
            }
            return Task.FromResult(0);
        });
        eval.Subcommands.Add(semantic);
        static Dictionary<string, float[]> ReadVectors(string path)
        {
            using var r = new BinaryReader(File.OpenRead(path));
            var n = r.ReadInt32();
            var d = new Dictionary<string, float[]>(n, StringComparer.Ordinal);
            for (var i = 0; i < n; i++)
            {
                var text = r.ReadString();
                var v = new float[r.ReadInt32()];
                r.Read(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()));
                d[text] = v;
            }
            return d;
        }
        static void WriteVectors(string path, Dictionary<string, float[]> vectors)
        {
            using var w = new BinaryWriter(File.Create(path));
            w.Write(vectors.Count);
            foreach (var (text, v) in vectors)
            {
                w.Write(text);
                w.Write(v.Length);
                w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()));
            }
        }

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
        eval.Subcommands.Add(CompressionCommand());
        eval.Subcommands.Add(EvalCompactionCommand.Create());
        return eval;
    }

    /// <summary><c>bursar eval compression</c>: document compression on pages with a known article (tokens before and after, recall of the article's words).</summary>
    private static Command CompressionCommand()
    {
        var pagesOption = new Option<string>("--pages") { Description = "A folder of page folders, each with source.html and the article in expected.html (Mozilla readability's test pages)", DefaultValueFactory = _ => "../shared/data/documents/readability" };
        var modelOption = new Option<string>("--model") { Description = "The model whose tokenizer counts the tokens", DefaultValueFactory = _ => "gpt-4o" };
        var all = new Option<bool>("--all") { Description = "One row per page (default: the ten lowest recalls)" };
        var command = new Command("compression", "Document compression on real web pages: tokens of the raw HTML and of the compressed text, and recall of the article's words") { pagesOption, modelOption, all };
        command.SetAction((pr, ct) =>
        {
            var folder = pr.GetValue(pagesOption)!;
            if (!Directory.Exists(folder)) { Console.Error.WriteLine($"No such folder: {folder}"); return Task.FromResult(2); }
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            var result = Bursar.Core.Context.CompressionEvaluation.Run(folder, new Bursar.Core.Context.DocumentCompressor(new Bursar.Core.Context.DocumentCompressionOptions()),
                Bursar.Core.Tokens.TokenCounter.Default, pr.GetValue(modelOption)!, new Progress<int>(n => Console.Error.Write($"\r  {n} pages")));
            Console.Error.WriteLine($"\r  {result.Pages.Count} pages in {System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds:F1} s");
            Console.WriteLine($"{"page",-36} {"raw HTML",10} {"compressed",10} {"article",9} {"removed",8} {"recall",7}");
            var rows = pr.GetValue(all) ? result.Pages : result.Pages.OrderBy(p => p.Recall).Take(10).ToList();
            foreach (var p in rows)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{p.Name,-36} {p.RawTokens,10:N0} {p.CompressedTokens,10:N0} {p.ArticleTokens,9:N0} {p.Reduction,8:P1} {p.Recall,7:P1}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{"all " + result.Pages.Count + " pages",-36} {result.RawTokens,10:N0} {result.CompressedTokens,10:N0} {result.ArticleTokens,9:N0} {result.Reduction,8:P1} {result.MeanRecall,7:P1}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"\nTokens ({result.Model} tokenizer): {result.RawTokens:N0} raw -> {result.CompressedTokens:N0} compressed, {result.Reduction:P1} fewer; recall of the article's words: mean {result.MeanRecall:P2} per page, {result.PooledRecall:P2} pooled; median page reduction {Median(result.Pages.Select(p => p.Reduction)):P1}."));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Target: >= 98% recall at >= 40% fewer tokens: {(result.MeanRecall >= 0.98 && result.Reduction >= 0.40 ? "met" : "not met")}."));
            return Task.FromResult(0);
        });
        return command;

        static double Median(IEnumerable<double> values)
        {
            var v = values.Order().ToArray();
            return v.Length == 0 ? 0 : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
        }
    }
}
