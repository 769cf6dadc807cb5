using System.Numerics.Tensors;

namespace Bursar.Core.Caching.Semantic;

/// <summary>
/// An in-process exact nearest-neighbour index over L2-normalized vectors: one contiguous float array per partition
/// (tenant, model, system prompt), scanned with SIMD dot products (<see cref="TensorPrimitives"/>).
/// </summary>
public sealed class VectorIndex<T>(int dimensions)
{
    private sealed class Partition
    {
        public float[] Vectors = new float[1024 * 64];
        public readonly List<T> Items = [];
        public readonly ReaderWriterLockSlim Lock = new();
    }

    private readonly Dictionary<string, Partition> _partitions = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    public int Dimensions => dimensions;

    public int Count
    {
        get { lock (_lock) return _partitions.Values.Sum(p => p.Items.Count); }
    }

    public void Add(string partition, ReadOnlySpan<float> vector, T item)
    {
        if (vector.Length != dimensions) throw new ArgumentException($"Expected {dimensions} dimensions, got {vector.Length}.", nameof(vector));
        Partition p;
        lock (_lock)
        {
            if (!_partitions.TryGetValue(partition, out p!)) _partitions[partition] = p = new Partition();
        }
        p.Lock.EnterWriteLock();
        try
        {
            var n = p.Items.Count;
            if ((n + 1) * dimensions > p.Vectors.Length) Array.Resize(ref p.Vectors, Math.Max(p.Vectors.Length * 2, (n + 1) * dimensions));
            vector.CopyTo(p.Vectors.AsSpan(n * dimensions, dimensions));
            p.Items.Add(item);
        }
        finally
        {
            p.Lock.ExitWriteLock();
        }
    }

    /// <summary>The most similar item (cosine) in the partition, or none when it is empty.</summary>
    public (T? Item, float Score) Nearest(string partition, ReadOnlySpan<float> query)
    {
        Partition? p;
        lock (_lock) _partitions.TryGetValue(partition, out p);
        if (p is null) return (default, float.NegativeInfinity);
        p.Lock.EnterReadLock();
        try
        {
            var best = -1;
            var bestScore = float.NegativeInfinity;
            var span = p.Vectors.AsSpan();
            for (var i = 0; i < p.Items.Count; i++)
            {
                var s = TensorPrimitives.Dot(span.Slice(i * dimensions, dimensions), query);
                if (s > bestScore) { bestScore = s; best = i; }
            }
            return best < 0 ? (default, bestScore) : (p.Items[best], bestScore);
        }
        finally
        {
            p.Lock.ExitReadLock();
        }
    }
}
