using Microsoft.Extensions.AI;

namespace Bursar.Core.Caching.Semantic;

/// <summary>
/// The encoder the semantic cache uses, chosen once: its generator, its name (for logs and health), the similarity threshold
/// calibrated for it, what loading it cost; or, when the configured model could not be loaded, why the semantic cache is off.
/// </summary>
public sealed class SemanticEncoder
{
    /// <summary>Thresholds chosen by <c>bursar eval semantic-cache</c> on the calibration halves (bench/RESULTS.md).</summary>
    public const float LocalThreshold = 0.95f;
    /// <summary>
    /// MiniLM's: no threshold reaches 95% precision on QQP's calibration half with useful recall (0.995 gives 95.0% at 1.8%); 0.95
    /// gives 89.0% / 20.6% there (held-out 88.3% / 20.2%, where many "wrong" hits are paraphrases QQP labels otherwise) and 100%
    /// precision on the GPTCache paraphrases. Paraphrase-heavy traffic can go lower after its own eval (GPTCache: 0.73, 100% / 95.0%).
    /// </summary>
    public const float MiniLmThreshold = 0.95f;
    /// <summary>
    /// The guards kept for MiniLM (bursar eval semantic-cache --generator minilm, per guard, QQP calibration half): numbers,
    /// negation, word order and opposites; the named-entity, symbol and question-word guards cost it more recall than they
    /// add precision (the encoder already tells those apart).
    /// </summary>
    public const int MiniLmGuards = 1 << 0 | 1 << 1 | 1 << 5 | 1 << 6;

    private SemanticEncoder(IEmbeddingGenerator<string, Embedding<float>>? generator, string name, float threshold, bool dense, string? disabledReason)
    {
        Generator = generator;
        Name = name;
        DefaultThreshold = threshold;
        Dense = dense;
        DisabledReason = disabledReason;
    }

    /// <summary>Null when <see cref="DisabledReason"/> is set.</summary>
    public IEmbeddingGenerator<string, Embedding<float>>? Generator { get; }
    public string Name { get; }
    /// <summary>The threshold used when <see cref="SemanticCacheOptions.Threshold"/> is not set.</summary>
    public float DefaultThreshold { get; }
    /// <summary>Dense vectors (a learned encoder) are searched by <see cref="VectorIndex{T}"/>, sparse hashed ones by <see cref="SparseVectorIndex{T}"/>.</summary>
    public bool Dense { get; }
    public string? DisabledReason { get; }
    /// <summary>The guards kept for this encoder (a mask over <see cref="SemanticGuards.Names"/>): those that raise its held-out precision by more than they cost recall.</summary>
    public int Guards { get; private init; } = SemanticGuards.All;
    public bool Enabled => DisabledReason is null;
    /// <summary>Builds the index of this encoder's vectors; null: the exact one (<see cref="VectorIndex{T}"/> when dense, <see cref="SparseVectorIndex{T}"/> otherwise).</summary>
    public IVectorIndexFactory? IndexFactory { get; private init; }
    /// <summary>How long extracting and loading the model took, and about how much memory its weights take (zero for the built-in generator).</summary>
    public TimeSpan LoadTime { get; private init; }
    public long ModelBytes { get; private init; }

    public static SemanticEncoder Local(HashedNGramEmbeddingGenerator generator, string? fallbackReason = null) =>
        new(generator, HashedNGramEmbeddingGenerator.Name, LocalThreshold, dense: false, null) { FallbackReason = fallbackReason };

    /// <summary>Why the configured model was not used and the built-in generator was (<c>auto</c> without MiniLM); null otherwise.</summary>
    public string? FallbackReason { get; private init; }
    /// <summary>How much the process's resident memory grew while the model loaded (about what its weights and session take; zero when not measured).</summary>
    public long LoadMemoryBytes { get; private init; }

    public static SemanticEncoder Learned(IEmbeddingGenerator<string, Embedding<float>> generator, string name, float threshold, TimeSpan loadTime = default, long modelBytes = 0, int guards = SemanticGuards.All, IVectorIndexFactory? index = null, long loadMemoryBytes = 0) =>
        new(generator, name, threshold, dense: true, null) { LoadTime = loadTime, ModelBytes = modelBytes, Guards = guards, IndexFactory = index, LoadMemoryBytes = loadMemoryBytes };

    public static SemanticEncoder Disabled(string name, string reason) => new(null, name, 1f, dense: true, reason);

    /// <summary>An encoder for a generator built by hand (tests, benchmarks, embedders): the local one is sparse, any other dense with the default threshold.</summary>
    public static SemanticEncoder For(IEmbeddingGenerator<string, Embedding<float>> generator) => generator is HashedNGramEmbeddingGenerator local
        ? Local(local)
        : Learned(generator, generator.GetService<EmbeddingGeneratorMetadata>()?.DefaultModelId ?? generator.GetType().Name, LocalThreshold);
}
