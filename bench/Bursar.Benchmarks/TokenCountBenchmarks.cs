using BenchmarkDotNet.Attributes;
using Bursar.Core.Tokens;
using Microsoft.ML.Tokenizers;

namespace Bursar.Benchmarks;

/// <summary>
/// Counting a prompt's tokens (the pre-call estimates, the prompt-cache placer, the Simulator): Bursar's compact encodings
/// against Microsoft.ML.Tokenizers' tiktoken (the reference its counts are tested equal to) on 2,000-character slices of
/// real articles (mozilla/readability's expected pages, several languages), o200k and cl100k.
/// </summary>
[MemoryDiagnoser]
public class TokenCountBenchmarks
{
    private string[] _prompts = [];
    private BpeEncoding _ours = null!;
    private Tokenizer _reference = null!;

    [Params("o200k_base", "cl100k_base")]
    public string Encoding { get; set; } = "o200k_base";

    [GlobalSetup]
    public void Setup()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Bursar.slnx"))) dir = dir.Parent;
        var root = Path.Combine(dir!.FullName, "..", "shared", "data", "documents", "readability");
        var text = string.Concat(Directory.GetDirectories(root).Order(StringComparer.Ordinal).Select(d => File.ReadAllText(Path.Combine(d, "expected.html"))));
        _prompts = Enumerable.Range(0, 64).Select(i => text.Substring(i * 29_000 % (text.Length - 2_000), 2_000)).ToArray();
        _ours = Encoding == "o200k_base" ? BpeEncoding.O200k : BpeEncoding.Cl100k;
        _reference = TiktokenTokenizer.CreateForEncoding(Encoding);
    }

    /// <summary>64 prompts of 2,000 characters each.</summary>
    [Benchmark(Baseline = true)]
    public int Reference()
    {
        var n = 0;
        foreach (var p in _prompts) n += _reference.CountTokens(p);
        return n;
    }

    [Benchmark]
    public int Bursar()
    {
        var n = 0;
        foreach (var p in _prompts) n += _ours.CountTokens(p);
        return n;
    }
}
