using System.Numerics.Tensors;
using Bursar.Core.Caching.Semantic;
using Bursar.Embeddings.Onnx;

namespace Bursar.Gateway.Tests;

/// <summary>
/// The approximate tier of the dense index (USearch HNSW): exact below AnnAbove, the graph above it, its candidates re-ranked by
/// their exact cosine, so on near-duplicate queries it returns what the exact scan returns with the same score; removals.
/// </summary>
public sealed class HnswVectorIndexTests
{
    private const int Dims = 384;

    /// <summary>Clustered unit vectors, as sentence embeddings are: 200 topics, each entry a topic plus noise.</summary>
    private static float[][] Clustered(int n, int seed)
    {
        var rng = new Random(seed);
        var topics = Enumerable.Range(0, 200).Select(_ => Unit(Enumerable.Range(0, Dims).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray())).ToArray();
        return Enumerable.Range(0, n).Select(_ =>
        {
            var t = topics[rng.Next(topics.Length)];
            return Unit(t.Select(x => x + (float)(rng.NextDouble() - 0.5) * 0.08f).ToArray());
        }).ToArray();
    }

    private static float[] Unit(float[] v)
    {
        TensorPrimitives.Divide(v, TensorPrimitives.Norm(v), v);
        return v;
    }

    private static float[] Near(float[] v, Random rng) => Unit(v.Select(x => x + (float)(rng.NextDouble() - 0.5) * 0.01f).ToArray());

    [Fact]
    public void Above_the_threshold_the_graph_finds_what_the_exact_scan_finds_with_the_exact_score()
    {
        var vectors = Clustered(6000, 1);
        using var ann = new HnswVectorIndex<string>(Dims, new HnswIndexOptions { AnnAbove = 1000 });
        var exact = new VectorIndex<string>(Dims);
        for (var i = 0; i < vectors.Length; i++)
        {
            ann.Add("p", vectors[i], $"e{i}");
            exact.Add("p", vectors[i], $"e{i}");
        }
        Assert.Equal(1, ann.ApproximatePartitions);
        Assert.Equal(6000, ann.Count);
        var rng = new Random(2);
        var same = 0;
        for (var q = 0; q < 300; q++)
        {
            var query = Near(vectors[rng.Next(vectors.Length)], rng); // a paraphrase of a stored question
            var (a, sa) = ann.Nearest("p", query);
            var (e, se) = exact.Nearest("p", query);
            if (a == e)
            {
                same++;
                Assert.Equal(se, sa, 5); // re-ranked: the exact cosine, not the graph's f16 distance
            }
            Assert.True(sa <= se + 1e-5f); // never better than the truth
        }
        Assert.True(same >= 297, $"{same} of 300 near-duplicate queries found the exact nearest"); // >= 99%
    }

    [Fact]
    public void At_or_below_the_threshold_the_index_is_exact_and_a_shrunken_partition_drops_its_graph()
    {
        var vectors = Clustered(300, 3);
        using var ann = new HnswVectorIndex<string>(Dims, new HnswIndexOptions { AnnAbove = 200 });
        var exact = new VectorIndex<string>(Dims);
        for (var i = 0; i < 200; i++)
        {
            ann.Add("p", vectors[i], $"e{i}");
            exact.Add("p", vectors[i], $"e{i}");
        }
        Assert.Equal(0, ann.ApproximatePartitions);
        var rng = new Random(4);
        for (var q = 0; q < 50; q++)
        {
            var query = Unit(Enumerable.Range(0, Dims).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray()); // anything, not only near-duplicates
            Assert.Equal(exact.Nearest("p", query), ann.Nearest("p", query));
        }
        for (var i = 200; i < 300; i++) ann.Add("p", vectors[i], $"e{i}");
        Assert.Equal(1, ann.ApproximatePartitions);
        Assert.Equal(201, ann.RemoveWhere(s => int.Parse(s.AsSpan(1), System.Globalization.CultureInfo.InvariantCulture) % 3 != 0 || s == "e3"));
        Assert.Equal(99, ann.Count);
        Assert.Equal(0, ann.ApproximatePartitions); // under half the threshold: back to the exact scan
        Assert.Equal("e6", ann.Nearest("p", vectors[6]).Item);
        Assert.NotEqual("e3", ann.Nearest("p", vectors[3]).Item);
    }

    [Fact]
    public void A_removed_entry_is_never_returned_by_the_graph_and_other_partitions_are_untouched()
    {
        var vectors = Clustered(3000, 5);
        using var ann = new HnswVectorIndex<string>(Dims, new HnswIndexOptions { AnnAbove = 500 });
        var items = vectors.Select((_, i) => $"e{i}").ToArray();
        for (var i = 0; i < vectors.Length; i++) ann.Add("p", vectors[i], items[i]);
        ann.Add("other", vectors[0], "o0");
        Assert.Equal(1, ann.ApproximatePartitions);
        var rng = new Random(6);
        for (var k = 0; k < 100; k++)
        {
            var i = rng.Next(vectors.Length);
            if (!ann.Remove("p", items[i])) continue;
            Assert.False(ann.Remove("p", items[i]));
            var (found, score) = ann.Nearest("p", vectors[i]);
            Assert.NotEqual(items[i], found);
            Assert.True(score < 1f - 1e-6f || found is not null);
        }
        Assert.Equal(1, ann.ApproximatePartitions);
        Assert.Equal(("o0", 1f), (ann.Nearest("other", vectors[0]).Item, MathF.Round(ann.Nearest("other", vectors[0]).Score, 4)));
        // an entry that moved into a removed one's slot is still found, with its exact score
        var (last, s) = ann.Nearest("p", vectors[^1]);
        Assert.Equal(items[^1], last);
        Assert.Equal(1f, s, 4);
    }

    [Theory]
    [InlineData(0, 16, 64, 16, "AnnAbove")]
    [InlineData(10, 1, 64, 16, "Connectivity")]
    [InlineData(10, 16, 8, 16, "Candidates")]
    public void Options_out_of_range_are_refused_naming_the_key(int annAbove, int m, int ef, int candidates, string key)
    {
        var e = Assert.Throws<InvalidOperationException>(() => new HnswIndexOptions { AnnAbove = annAbove, Connectivity = m, ExpansionSearch = ef, Candidates = candidates }.Validate());
        Assert.Contains($"Bursar:SemanticCache:Ann:{key}", e.Message);
    }
}
