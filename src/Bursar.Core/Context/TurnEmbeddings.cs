using System.Collections.Concurrent;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using Microsoft.Extensions.AI;

namespace Bursar.Core.Context;

/// <summary>
/// The encoder retrieval compaction embeds turns with: the semantic cache's <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/>,
/// resolved on first use by the factory the host gives (the gateway and the library pass the semantic cache's own encoder, so one model
/// is loaded). A conversation re-sends its older turns on every call: their vectors are kept (bounded, keyed by the text's hash), so a
/// turn is embedded once. Thread-safe.
/// </summary>
public sealed class TurnEmbeddings
{
    /// <summary>A turn is embedded from at most this many characters of its transcript (its start: what the user asked, what was called).</summary>
    public const int MaxChars = 2_000;
    private const int CacheEntries = 8_192;

    private readonly Lazy<IEmbeddingGenerator<string, Embedding<float>>?> _generator;
    private readonly ConcurrentDictionary<UInt128, float[]> _vectors = new();

    /// <param name="generator">Returns the generator, or null when there is none (retrieval is then a sliding window).</param>
    public TurnEmbeddings(Func<IEmbeddingGenerator<string, Embedding<float>>?> generator) =>
        _generator = new(generator, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>No encoder: retrieval compacts as a sliding window.</summary>
    public static TurnEmbeddings None { get; } = new(() => null);

    public IEmbeddingGenerator<string, Embedding<float>>? Generator => _generator.Value;

    /// <summary>The vectors of <paramref name="texts"/>, in order (those seen before from the cache, the rest in one generator call); null without a generator.</summary>
    public async ValueTask<float[][]?> EmbedAsync(IReadOnlyList<string> texts, CancellationToken ct)
    {
        if (Generator is not { } generator) return null;
        var result = new float[texts.Count][];
        var keys = new UInt128[texts.Count];
        List<int>? missing = null;
        for (var i = 0; i < texts.Count; i++)
        {
            keys[i] = XxHash128.HashToUInt128(MemoryMarshal.AsBytes(texts[i].AsSpan()));
            if (_vectors.TryGetValue(keys[i], out var v)) result[i] = v;
            else (missing ??= []).Add(i);
        }
        if (missing is null) return result;
        var generated = await generator.GenerateAsync(missing.Select(i => texts[i]), cancellationToken: ct).ConfigureAwait(false);
        if (generated.Count != missing.Count) return null;
        if (_vectors.Count + missing.Count > CacheEntries) _vectors.Clear();
        for (var k = 0; k < missing.Count; k++)
        {
            var vector = generated[k].Vector.ToArray();
            result[missing[k]] = vector;
            _vectors[keys[missing[k]]] = vector;
        }
        return result;
    }
}
