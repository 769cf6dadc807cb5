namespace Bursar.Providers.Simulator;

/// <summary>How the built-in provider Simulator behaves. Defaults answer instantly.</summary>
public sealed class SimulatorOptions
{
    public const string Section = "Bursar:Simulator";

    /// <summary>Delay before the first token. Default 0.</summary>
    public TimeSpan TimeToFirstToken { get; set; } = TimeSpan.Zero;

    /// <summary>Output speed when streaming; 0 = as fast as possible. Default 0.</summary>
    public double TokensPerSecond { get; set; }

    /// <summary>Idle lifetime of an OpenAI automatic prompt-cache entry. Default 10 minutes (OpenAI: 5-10 minutes, at most 1 hour).</summary>
    public TimeSpan OpenAICacheTtl { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Anthropic minimum cacheable prefix for models the price catalog does not know. Default 1024.</summary>
    public int DefaultAnthropicMinCacheTokens { get; set; } = 1024;

    /// <summary>
    /// Labeled prompt sets (RouteLLM csv folders or files): a request whose newest user turn is one of their prompts is answered correctly
    /// or not as the recorded strong or weak model did, marked <c>[[graded:correct]]</c> or <c>[[graded:wrong]]</c>, so routing quality can be
    /// measured end to end through the gateway. Default none.
    /// </summary>
    public List<string> LabeledSets { get; set; } = [];

    /// <summary>Models that answer labeled prompts as the recorded strong model; others answer as the weak one. Default: the top rung of each tier ladder.</summary>
    public List<string> StrongModels { get; set; } = [];

    /// <summary>Model ids the Simulator answers besides those of the price catalog and the deployments it serves; any other model gets a 404. Default none.</summary>
    public List<string> Models { get; set; } = [];

    /// <summary>
    /// Where the simulated Files and Batches APIs keep uploads, results and batch state (kept across restarts of a Simulator over the same
    /// folder). Default: a fresh folder under the system temp directory.
    /// </summary>
    public string? BatchDirectory { get; set; }

    /// <summary>
    /// How long a simulated batch takes from creation until every request has its result. A batch whose processing time reaches its
    /// completion window (24 hours) expires instead, every request unfinished. Default 0 (results at the first poll).
    /// </summary>
    public TimeSpan BatchProcessingTime { get; set; } = TimeSpan.Zero;

    /// <summary>
    /// How long the Simulator waits after accepting a batch (its state saved) before it answers (crash drills: the provider holds a batch
    /// whose creator never heard back). Default 0.
    /// </summary>
    public TimeSpan BatchAcceptDelay { get; set; } = TimeSpan.Zero;

    /// <summary>Largest file the simulated Files API accepts. Default 200 MB (OpenAI's batch input limit).</summary>
    public long BatchMaxFileBytes { get; set; } = 200L * 1024 * 1024;

    /// <summary>Faults to inject into the next requests, in order (tests and chaos drills).</summary>
    public SimulatorFaults Faults { get; } = new();

    public SimulatorOptions Clone()
    {
        var c = new SimulatorOptions
        {
            TimeToFirstToken = TimeToFirstToken,
            TokensPerSecond = TokensPerSecond,
            OpenAICacheTtl = OpenAICacheTtl,
            DefaultAnthropicMinCacheTokens = DefaultAnthropicMinCacheTokens,
            LabeledSets = [.. LabeledSets],
            StrongModels = [.. StrongModels],
            Models = [.. Models],
            BatchDirectory = BatchDirectory,
            BatchProcessingTime = BatchProcessingTime,
            BatchMaxFileBytes = BatchMaxFileBytes,
            BatchAcceptDelay = BatchAcceptDelay,
        };
        return c;
    }
}

/// <summary>A fault the Simulator injects: an HTTP error before the response, or an error event in the middle of a stream.</summary>
public sealed record SimulatorFault(int Status, int? RetryAfterSeconds = null, bool MidStream = false)
{
    /// <summary>Parses <c>429</c>, <c>429:retry=2</c>, <c>500</c>, <c>529</c>, <c>midstream</c>.</summary>
    public static SimulatorFault? Parse(string text)
    {
        text = text.Trim();
        if (text.Equals("midstream", StringComparison.OrdinalIgnoreCase)) return new SimulatorFault(200, MidStream: true);
        var parts = text.Split(':', 2);
        if (!int.TryParse(parts[0], out var status) || status is < 400 or > 599) return null;
        int? retry = null;
        if (parts.Length == 2 && parts[1].StartsWith("retry=", StringComparison.OrdinalIgnoreCase) && int.TryParse(parts[1].AsSpan(6), out var r)) retry = r;
        return new SimulatorFault(status, retry);
    }
}

/// <summary>A queue of faults for the next requests. A prompt containing <c>[[sim:fault=529]]</c> injects one per request too.</summary>
public sealed class SimulatorFaults
{
    private readonly System.Collections.Concurrent.ConcurrentQueue<SimulatorFault> _queue = new();

    public void Enqueue(SimulatorFault fault) => _queue.Enqueue(fault);

    public void Enqueue(SimulatorFault fault, int times)
    {
        for (var i = 0; i < times; i++) _queue.Enqueue(fault);
    }

    public bool TryTake(out SimulatorFault? fault) => _queue.TryDequeue(out fault);

    public void Clear() => _queue.Clear();
}
