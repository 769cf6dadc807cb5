using System.Numerics.Tensors;
using System.Text;
using Microsoft.Extensions.AI;

namespace Bursar.Core.Caching.Semantic;

/// <summary>
/// The built-in local embedding generator: no model file. Character 3-5-grams and word unigrams/bigrams of the
/// lower-cased text, hashed into <see cref="Dimensions"/> buckets, weighted by IDF when fitted, L2-normalized.
/// Cheap and deterministic; weaker than a learned sentence encoder, so its threshold is calibrated high.
/// </summary>
public sealed class HashedNGramEmbeddingGenerator : IEmbeddingGenerator<string, Embedding<float>>
{
    public const string Name = "hashed-ngram";
    public int Dimensions { get; }
    private float[]? _idf;

    public HashedNGramEmbeddingGenerator(int dimensions = 1 << 12)
    {
        if (dimensions < 64 || (dimensions & (dimensions - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(dimensions), dimensions, "Dimensions must be a power of two of at least 64.");
        Dimensions = dimensions;
    }

    public EmbeddingGeneratorMetadata Metadata => new(Name, null, Name, Dimensions);

    /// <summary>Learns IDF weights from a corpus (e.g. past queries); without it every feature weighs 1.</summary>
    public void Fit(IEnumerable<string> corpus)
    {
        var df = new int[Dimensions];
        var n = 0;
        var seen = new HashSet<int>();
        foreach (var doc in corpus)
        {
            n++;
            seen.Clear();
            Features(doc, (b, _) => seen.Add(b));
            foreach (var b in seen) df[b]++;
        }
        var idf = new float[Dimensions];
        for (var i = 0; i < Dimensions; i++) idf[i] = MathF.Log((1f + n) / (1f + df[i])) + 1f;
        _idf = idf;
    }

    public float[] Embed(string text)
    {
        var v = new float[Dimensions];
        Features(text, (b, w) => v[b] += w);
        for (var i = 0; i < v.Length; i++)
            if (v[i] != 0) v[i] = (1 + MathF.Log(v[i])) * (_idf?[i] ?? 1f); // sublinear term frequency, IDF when fitted
        var norm = TensorPrimitives.Norm(v);
        if (norm > 0) TensorPrimitives.Divide(v, norm, v);
        return v;
    }

    private void Features(string text, Action<int, float> add)
    {
        var s = Normalize(text);
        var padded = " " + s + " ";
        var mask = Dimensions - 1;
        for (var n = 3; n <= 5; n++)
            for (var i = 0; i + n <= padded.Length; i++)
                add(Hash(padded.AsSpan(i, n), (uint)n) & mask, 1f);
        var words = s.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        for (var i = 0; i < words.Length; i++)
        {
            add(Hash(words[i], 101) & mask, 2f);
            if (i + 1 < words.Length) add(Hash(words[i] + " " + words[i + 1], 102) & mask, 2f);
        }
    }

    internal static string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        var space = false;
        foreach (var ch in text.ToLowerInvariant())
        {
            if (char.IsLetterOrDigit(ch) || ch == '\'') { sb.Append(ch); space = false; }
            else if (!space) { sb.Append(' '); space = true; }
        }
        return sb.ToString().Trim();
    }

    private static int Hash(ReadOnlySpan<char> s, uint seed)
    {
        var h = 2166136261u ^ seed;
        foreach (var c in s) { h ^= c; h *= 16777619u; }
        return (int)(h & 0x7fffffff);
    }

    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var result = new GeneratedEmbeddings<Embedding<float>>(values.Select(v => new Embedding<float>(Embed(v)) { ModelId = Name }));
        return Task.FromResult(result);
    }

    public object? GetService(Type serviceType, object? serviceKey = null) => serviceType.IsInstanceOfType(this) ? this : null;

    public void Dispose() { }
}
