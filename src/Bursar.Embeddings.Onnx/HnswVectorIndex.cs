using System.Numerics.Tensors;
using Bursar.Core.Caching.Semantic;
using Cloud.Unum.USearch;

namespace Bursar.Embeddings.Onnx;

/// <summary>Options of <see cref="HnswVectorIndex{T}"/> (<c>Bursar:SemanticCache:Ann</c>).</summary>
public sealed class HnswIndexOptions
{
    /// <summary>
    /// A partition with more entries than this is searched through an HNSW graph (USearch); at or below it, by the exact SIMD scan
    /// (at 4,096 MiniLM vectors the scan takes well under a millisecond and needs no graph). Default 4,096. A partition that
    /// shrinks below half of it drops its graph.
    /// </summary>
    public int AnnAbove { get; set; } = 4096;
    /// <summary>Graph neighbours per node (HNSW's M). Default 16.</summary>
    public int Connectivity { get; set; } = 16;
    /// <summary>Candidate list length while inserting (efConstruction). Default 128.</summary>
    public int ExpansionAdd { get; set; } = 128;
    /// <summary>Candidate list length while searching (ef). Default 64.</summary>
    public int ExpansionSearch { get; set; } = 64;
    /// <summary>Nearest candidates the graph returns, re-ranked by their exact cosine over the stored float vectors. Default 16.</summary>
    public int Candidates { get; set; } = 16;
    /// <summary>How the graph stores its copy of each vector: <c>i8</c> (1 byte per dimension, SIMD distances), <c>f16</c> or <c>f32</c>. Default i8 (re-ranking uses the floats).</summary>
    public string Quantization { get; set; } = "i8";

    internal ScalarKind Scalar => Quantization switch { "f16" => ScalarKind.Float16, "f32" => ScalarKind.Float32, _ => ScalarKind.Int8 };
    internal int ScalarBytes => Quantization switch { "f16" => 2, "f32" => 4, _ => 1 };

    public void Validate()
    {
        if (AnnAbove < 1) throw new InvalidOperationException($"Bursar:SemanticCache:Ann:AnnAbove must be at least 1, not {AnnAbove}.");
        if (Connectivity is < 2 or > 256) throw new InvalidOperationException($"Bursar:SemanticCache:Ann:Connectivity must be between 2 and 256, not {Connectivity}.");
        if (ExpansionAdd < 1) throw new InvalidOperationException($"Bursar:SemanticCache:Ann:ExpansionAdd must be at least 1, not {ExpansionAdd}.");
        if (ExpansionSearch < 1) throw new InvalidOperationException($"Bursar:SemanticCache:Ann:ExpansionSearch must be at least 1, not {ExpansionSearch}.");
        if (Quantization is not ("i8" or "f16" or "f32")) throw new InvalidOperationException($"Bursar:SemanticCache:Ann:Quantization must be 'i8', 'f16' or 'f32', not '{Quantization}'.");
        if (Candidates < 1 || Candidates > ExpansionSearch) throw new InvalidOperationException($"Bursar:SemanticCache:Ann:Candidates must be between 1 and ExpansionSearch ({ExpansionSearch}), not {Candidates}.");
    }
}

/// <summary>Builds <see cref="HnswVectorIndex{T}"/>s for the semantic cache of a learned encoder.</summary>
public sealed class HnswVectorIndexFactory(HnswIndexOptions options) : IVectorIndexFactory
{
    public IVectorIndex<T> Create<T>(int dimensions) where T : class => new HnswVectorIndex<T>(dimensions, options);
}

/// <summary>
/// The dense index of a learned encoder's vectors with an approximate tier: each partition keeps its L2-normalized float vectors
/// in one contiguous array (as <see cref="VectorIndex{T}"/>); while it holds at most <see cref="HnswIndexOptions.AnnAbove"/>
/// entries a query scans them exactly; past that, an HNSW graph (USearch, cosine, i8 copies of the vectors by default) proposes
/// <see cref="HnswIndexOptions.Candidates"/> neighbours, and the one returned is the best of them by its exact cosine over the
/// float vectors, so the score is always exact (only which entry is found is approximate). Removals take the entry out of both.
/// Memory per entry past the threshold: 4 bytes per dimension (floats) + 1 per dimension (i8 in the graph) + the graph's links
/// and key maps (about 2 x Connectivity x 4 + 100 bytes): 2.7 KB charged per MiniLM entry; measured 5.4 KB of process memory per
/// entry at 100,000 (the graph reserves room ahead), against 2.65 KB for the exact index alone (bench ann-percentiles).
/// Native graph calls of one partition are serialized (one lock per partition); partitions are independent.
/// </summary>
public sealed class HnswVectorIndex<T> : IVectorIndex<T>, IDisposable where T : class
{
    private const int InitialEntries = 16;

    private sealed class Partition(int dimensions)
    {
        public float[] Vectors = new float[InitialEntries * dimensions];
        public readonly List<T> Items = [];
        public readonly List<ulong> Keys = [];
        public readonly Dictionary<ulong, int> SlotOf = [];
        public readonly Dictionary<T, ulong> KeyOf = new(ReferenceEqualityComparer.Instance);
        public readonly ReaderWriterLockSlim Lock = new();
        public readonly Lock Native = new();
        public USearchIndex? Graph;
        public ulong NextKey;
    }

    private readonly int _dimensions;
    private readonly HnswIndexOptions _options;
    private readonly Dictionary<string, Partition> _partitions = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private int _count;
    private long _bytes;

    public HnswVectorIndex(int dimensions, HnswIndexOptions? options = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimensions, 1);
        _dimensions = dimensions;
        _options = options ?? new HnswIndexOptions();
        _options.Validate();
    }

    public int Count => Volatile.Read(ref _count);
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>Partitions searched through their graph now.</summary>
    public int ApproximatePartitions
    {
        get
        {
            lock (_lock) return _partitions.Values.Count(p => p.Graph is not null);
        }
    }

    /// <summary>What one entry adds once its partition has a graph: its quantized copy, its links and map slots.</summary>
    private long GraphEntryBytes => (long)_options.ScalarBytes * _dimensions + 8L * _options.Connectivity + 64;
    private long EntryBytes => 4L * _dimensions + IntPtr.Size + 8 + 48 + 48;

    public long CostOf(string partition, ReadOnlySpan<float> vector)
    {
        bool known;
        lock (_lock) known = _partitions.ContainsKey(partition);
        // the first array of a new partition; an entry (floats charged when the array doubles) and, at worst, the graph's share
        return (known ? 0 : 4L * InitialEntries * _dimensions + 2L * partition.Length + 256) + EntryBytes + GraphEntryBytes;
    }

    public void Add(string partition, ReadOnlySpan<float> vector, T item)
    {
        if (vector.Length != _dimensions) throw new ArgumentException($"Expected {_dimensions} dimensions, got {vector.Length}.", nameof(vector));
        Partition p;
        lock (_lock)
        {
            if (!_partitions.TryGetValue(partition, out p!))
            {
                _partitions[partition] = p = new Partition(_dimensions);
                Interlocked.Add(ref _bytes, 4L * p.Vectors.Length + 2L * partition.Length + 256);
            }
        }
        p.Lock.EnterWriteLock();
        try
        {
            var n = p.Items.Count;
            if ((n + 1) * _dimensions > p.Vectors.Length)
            {
                var old = p.Vectors.Length;
                Array.Resize(ref p.Vectors, Math.Max(p.Vectors.Length * 2, (n + 1) * _dimensions));
                Interlocked.Add(ref _bytes, 4L * (p.Vectors.Length - old));
            }
            vector.CopyTo(p.Vectors.AsSpan(n * _dimensions, _dimensions));
            var key = p.NextKey++;
            p.Items.Add(item);
            p.Keys.Add(key);
            p.SlotOf[key] = n;
            p.KeyOf[item] = key;
            Interlocked.Add(ref _bytes, EntryBytes - 4L * _dimensions);
            if (p.Graph is { } graph)
            {
                lock (p.Native)
                {
                    UsearchCapacity.EnsureRoom(graph);
                    graph.Add(key, vector.ToArray());
                }
                Interlocked.Add(ref _bytes, GraphEntryBytes);
            }
            else if (p.Items.Count > _options.AnnAbove)
            {
                BuildGraph(p);
            }
        }
        finally
        {
            p.Lock.ExitWriteLock();
        }
        Interlocked.Increment(ref _count);
    }

    /// <summary>The partition passed the threshold: every entry goes into a new graph (under the partition's write lock), room reserved once.</summary>
    private void BuildGraph(Partition p)
    {
        var graph = new USearchIndex(MetricKind.Cos, _options.Scalar, (ulong)_dimensions, (ulong)_options.Connectivity, (ulong)_options.ExpansionAdd, (ulong)_options.ExpansionSearch);
        var vectors = new float[p.Items.Count][];
        for (var i = 0; i < vectors.Length; i++) vectors[i] = p.Vectors.AsSpan(i * _dimensions, _dimensions).ToArray();
        lock (p.Native)
        {
            UsearchCapacity.Reserve(graph, 2UL * (ulong)vectors.Length);
            graph.Add([.. p.Keys], vectors);
        }
        p.Graph = graph;
        Interlocked.Add(ref _bytes, GraphEntryBytes * p.Items.Count);
    }

    public (T? Item, float Score) Nearest(string partition, ReadOnlySpan<float> query)
    {
        Partition? p;
        lock (_lock) _partitions.TryGetValue(partition, out p);
        if (p is null) return (default, float.NegativeInfinity);
        p.Lock.EnterReadLock();
        try
        {
            var span = p.Vectors.AsSpan();
            var best = -1;
            var bestScore = float.NegativeInfinity;
            if (p.Graph is { } graph)
            {
                ulong[] keys;
                lock (p.Native) graph.Search(query.ToArray(), _options.Candidates, out keys, out _);
                // exact re-ranking of the graph's candidates over the float vectors
                foreach (var key in keys)
                {
                    if (!p.SlotOf.TryGetValue(key, out var i)) continue;
                    var s = TensorPrimitives.Dot(span.Slice(i * _dimensions, _dimensions), query);
                    if (s > bestScore) { bestScore = s; best = i; }
                }
            }
            else
            {
                for (var i = 0; i < p.Items.Count; i++)
                {
                    var s = TensorPrimitives.Dot(span.Slice(i * _dimensions, _dimensions), query);
                    if (s > bestScore) { bestScore = s; best = i; }
                }
            }
            return best < 0 ? (default, bestScore) : (p.Items[best], bestScore);
        }
        finally
        {
            p.Lock.ExitReadLock();
        }
    }

    public bool Remove(string partition, T item)
    {
        Partition? p;
        lock (_lock) _partitions.TryGetValue(partition, out p);
        if (p is null) return false;
        p.Lock.EnterWriteLock();
        try
        {
            if (!p.KeyOf.TryGetValue(item, out var key) || !p.SlotOf.TryGetValue(key, out var slot)) return false;
            RemoveAt(p, slot);
            ShrinkIfSmall(p);
            return true;
        }
        finally
        {
            p.Lock.ExitWriteLock();
        }
    }

    public int RemoveWhere(Func<T, bool> stale)
    {
        Partition[] all;
        lock (_lock) all = [.. _partitions.Values];
        var removed = 0;
        foreach (var p in all)
        {
            p.Lock.EnterWriteLock();
            try
            {
                for (var i = p.Items.Count - 1; i >= 0; i--)
                    if (stale(p.Items[i])) { RemoveAt(p, i); removed++; }
                ShrinkIfSmall(p);
            }
            finally
            {
                p.Lock.ExitWriteLock();
            }
        }
        return removed;
    }

    /// <summary>Out of the graph and the arrays; the last entry moves into the hole (its key stays, its slot changes).</summary>
    private void RemoveAt(Partition p, int i)
    {
        var key = p.Keys[i];
        if (p.Graph is { } graph)
        {
            lock (p.Native) graph.Remove(key);
            Interlocked.Add(ref _bytes, -GraphEntryBytes);
        }
        p.KeyOf.Remove(p.Items[i]);
        p.SlotOf.Remove(key);
        var last = p.Items.Count - 1;
        if (i != last)
        {
            p.Vectors.AsSpan(last * _dimensions, _dimensions).CopyTo(p.Vectors.AsSpan(i * _dimensions, _dimensions));
            p.Items[i] = p.Items[last];
            p.Keys[i] = p.Keys[last];
            p.SlotOf[p.Keys[i]] = i;
        }
        p.Items.RemoveAt(last);
        p.Keys.RemoveAt(last);
        Interlocked.Add(ref _bytes, -(EntryBytes - 4L * _dimensions)); // the float array keeps its length: its floats stay charged
        Interlocked.Decrement(ref _count);
    }

    /// <summary>A partition back under half the threshold goes back to the exact scan (a graph that only ever removes degrades).</summary>
    private void ShrinkIfSmall(Partition p)
    {
        if (p.Graph is not { } graph || p.Items.Count > _options.AnnAbove / 2) return;
        lock (p.Native) graph.Dispose();
        p.Graph = null;
        Interlocked.Add(ref _bytes, -GraphEntryBytes * p.Items.Count);
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var p in _partitions.Values)
                lock (p.Native)
                {
                    p.Graph?.Dispose();
                    p.Graph = null;
                }
        }
    }
}

/// <summary>
/// Geometric growth of a USearch graph's capacity. The C# wrapper of Cloud.Unum.USearch 2.26.6 reserves exactly one more slot
/// when a single <see cref="USearchIndex.Add(ulong, float[])"/> finds the index full, so every add past the first reservation
/// reallocates the whole graph (100,000 adds took 464 s on 2 cores). The wrapper keeps its native handle private; it is read once
/// by reflection and the native <c>usearch_reserve</c> called directly to double the capacity instead. Should a later version
/// rename the field, this does nothing and the wrapper's own (slow) growth applies.
/// </summary>
internal static class UsearchCapacity
{
    private static readonly System.Reflection.FieldInfo? Handle =
        typeof(USearchIndex).GetField("_index", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance);

    [System.Runtime.InteropServices.DllImport("libusearch_c", CallingConvention = System.Runtime.InteropServices.CallingConvention.Cdecl)]
    private static extern void usearch_reserve(IntPtr index, UIntPtr capacity, out IntPtr error);

    public static void EnsureRoom(USearchIndex graph)
    {
        var size = graph.Size();
        if (graph.Capacity() > size) return;
        Reserve(graph, Math.Max(64, 2 * size));
    }

    public static void Reserve(USearchIndex graph, ulong capacity)
    {
        if (Handle?.GetValue(graph) is not IntPtr index || index == IntPtr.Zero) return;
        usearch_reserve(index, (UIntPtr)capacity, out var error);
        if (error != IntPtr.Zero) throw new InvalidOperationException($"USearch could not reserve {capacity} slots: {System.Runtime.InteropServices.Marshal.PtrToStringAnsi(error)}");
    }
}
