using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Bursar.Providers.Simulator;

/// <summary>An uploaded file of the simulated OpenAI Files API: its metadata; the bytes live on disk at <see cref="Path"/>.</summary>
internal sealed class SimFile
{
    public required string Id { get; init; }
    public required string Filename { get; init; }
    public required string Purpose { get; init; }
    public required long Bytes { get; init; }
    public required long CreatedAt { get; init; }
    public required string Path { get; init; }
}

/// <summary>A simulated batch of either provider: its state, counts and result files.</summary>
internal sealed class SimBatch
{
    public required string Id { get; init; }
    /// <summary><c>openai</c> or <c>anthropic</c>.</summary>
    public required string Dialect { get; init; }
    /// <summary>The requests, one JSON line each (the OpenAI input file, or the Anthropic requests written out at create).</summary>
    public required string InputPath { get; init; }
    public string? InputFileId { get; init; }
    public string Endpoint { get; init; } = "/v1/chat/completions";
    public string CompletionWindow { get; init; } = "24h";
    public string? Metadata { get; init; }
    public string? Model { get; set; }
    public required DateTimeOffset CreatedAt { get; init; }
    public required DateTimeOffset ExpiresAt { get; init; }
    /// <summary>OpenAI vocabulary: validating, failed, in_progress, finalizing, completed, expired, cancelling, cancelled.</summary>
    public string Status { get; set; } = "in_progress";
    public DateTimeOffset? EndedAt { get; set; }
    public DateTimeOffset? CancelAt { get; set; }
    public int Total { get; set; }
    public int Succeeded { get; set; }
    public int Errored { get; set; }
    public int Canceled { get; set; }
    public int Expired { get; set; }
    public string? OutputFileId { get; set; }
    public string? ErrorFileId { get; set; }
    /// <summary>Anthropic: the results JSONL.</summary>
    public string? ResultsPath { get; set; }
    /// <summary>A validation failure (OpenAI <c>failed</c>): <c>[{code,line,message,param}]</c> as JSON.</summary>
    public string? Errors { get; set; }
    public long InputTokens { get; set; }
    public long CachedTokens { get; set; }
    public long OutputTokens { get; set; }
    public long ReasoningTokens { get; set; }
    public decimal BilledUsd { get; set; }

    [JsonIgnore]
    public SemaphoreSlim Gate { get; } = new(1, 1);

    [JsonIgnore]
    public bool Ended => Status is "failed" or "completed" or "expired" or "cancelled";
}

/// <summary>
/// The Simulator's batch state: files and batches by id, each saved as a JSON file next to its data in
/// <see cref="SimulatorOptions.BatchDirectory"/>, so a restarted Simulator over the same folder still knows them.
/// </summary>
internal sealed class SimulatorBatchStore
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly ConcurrentDictionary<string, SimFile> _files = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, SimBatch> _batches = new(StringComparer.Ordinal);

    public SimulatorBatchStore(string directory)
    {
        Directory = System.IO.Path.GetFullPath(directory);
        System.IO.Directory.CreateDirectory(Directory);
        foreach (var meta in System.IO.Directory.EnumerateFiles(Directory, "*.file.json"))
            if (Read<SimFile>(meta) is { } f && System.IO.File.Exists(f.Path)) _files[f.Id] = f;
        foreach (var meta in System.IO.Directory.EnumerateFiles(Directory, "*.batch.json"))
            if (Read<SimBatch>(meta) is { } b) _batches[b.Id] = b;
    }

    public string Directory { get; }

    public string DataPath(string id) => System.IO.Path.Combine(Directory, id + ".jsonl");

    public SimFile? File(string id) => _files.GetValueOrDefault(id);

    public SimBatch? Batch(string id) => _batches.GetValueOrDefault(id);

    public IEnumerable<SimFile> Files => _files.Values;

    /// <summary>Batches of one dialect, newest first (ids are time-ordered).</summary>
    public IEnumerable<SimBatch> Batches(string dialect) =>
        _batches.Values.Where(b => b.Dialect == dialect).OrderByDescending(b => b.CreatedAt).ThenByDescending(b => b.Id, StringComparer.Ordinal);

    public void Save(SimFile f)
    {
        _files[f.Id] = f;
        Write(System.IO.Path.Combine(Directory, f.Id + ".file.json"), f);
    }

    public void Save(SimBatch b)
    {
        _batches[b.Id] = b;
        Write(System.IO.Path.Combine(Directory, b.Id + ".batch.json"), b);
    }

    public bool Delete(SimFile f)
    {
        if (!_files.TryRemove(f.Id, out _)) return false;
        TryDelete(System.IO.Path.Combine(Directory, f.Id + ".file.json"));
        TryDelete(f.Path);
        return true;
    }

    public bool Delete(SimBatch b)
    {
        if (!_batches.TryRemove(b.Id, out _)) return false;
        TryDelete(System.IO.Path.Combine(Directory, b.Id + ".batch.json"));
        if (b.ResultsPath is not null) TryDelete(b.ResultsPath);
        if (b.Dialect == "anthropic") TryDelete(b.InputPath);
        return true;
    }

    private static void TryDelete(string path)
    {
        try { System.IO.File.Delete(path); } catch (IOException) { }
    }

    private static void Write<T>(string path, T value)
    {
        var tmp = path + ".tmp";
        System.IO.File.WriteAllBytes(tmp, JsonSerializer.SerializeToUtf8Bytes(value, Json));
        System.IO.File.Move(tmp, path, overwrite: true);
    }

    private static T? Read<T>(string path) where T : class
    {
        try
        {
            return JsonSerializer.Deserialize<T>(System.IO.File.ReadAllBytes(path), Json);
        }
        catch (Exception e) when (e is IOException or JsonException)
        {
            return null; // a half-written file of a Simulator killed mid-save: forgotten, as a provider would lose an unacknowledged upload
        }
    }
}
