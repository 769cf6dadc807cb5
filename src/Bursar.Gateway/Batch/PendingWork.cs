using System.Text.Json.Serialization;
using Bursar.Core.Batch;

namespace Bursar.Gateway.Batch;

/// <summary>The batch lever's work in flight, for the dashboard and <c>GET /admin/batches/pending</c>: queued jobs per deployment and model, and open provider batches.</summary>
public sealed record PendingWork(
    [property: JsonPropertyName("queued_jobs")] int QueuedJobs,
    [property: JsonPropertyName("submitted_jobs")] int SubmittedJobs,
    [property: JsonPropertyName("queues")] IReadOnlyList<PendingQueue> Queues,
    [property: JsonPropertyName("open_batches")] IReadOnlyList<PendingBatch> OpenBatches)
{
    /// <summary>At most this many submitted jobs and open batches are listed (the counts stop there too).</summary>
    public const int Limit = 1000;

    public static async Task<PendingWork> ReadAsync(IJobStore jobs, IBatchStore batches, CancellationToken ct)
    {
        var groups = await jobs.QueuedGroupsAsync(ct).ConfigureAwait(false);
        var submitted = await jobs.ListJobsAsync(JobState.Submitted, Limit, ct).ConfigureAwait(false);
        var open = await batches.ListOpenBatchesAsync(ct).ConfigureAwait(false);
        return new PendingWork(groups.Sum(g => g.Count), submitted.Count,
            groups.OrderBy(g => g.Oldest).Select(g => new PendingQueue(g.Deployment, g.Model, g.Count, g.Oldest, g.NearestDeadline)).ToArray(),
            open.Take(Limit).Select(b => new PendingBatch(b.Id, b.Dialect, b.Deployment, b.Phase.ToString().ToLowerInvariant(), b.Jobs, b.Lines, b.WorstUsd, b.CreatedAt,
                b.Object is { } o && System.Text.Json.Nodes.JsonNode.Parse(o) is System.Text.Json.Nodes.JsonObject obj ? BatchObjects.Str(obj, "status") ?? BatchObjects.Str(obj, "processing_status") : null)).ToArray());
    }
}

public sealed record PendingQueue(
    [property: JsonPropertyName("deployment")] string Deployment,
    [property: JsonPropertyName("model")] string Model,
    [property: JsonPropertyName("jobs")] int Jobs,
    [property: JsonPropertyName("oldest_queued_at")] DateTimeOffset Oldest,
    [property: JsonPropertyName("nearest_deadline")] DateTimeOffset NearestDeadline);

public sealed record PendingBatch(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("dialect")] string Dialect,
    [property: JsonPropertyName("deployment")] string Deployment,
    [property: JsonPropertyName("phase")] string Phase,
    [property: JsonPropertyName("deferred_jobs")] bool DeferredJobs,
    [property: JsonPropertyName("lines")] int Lines,
    [property: JsonPropertyName("worst_usd")] decimal WorstUsd,
    [property: JsonPropertyName("created_at")] DateTimeOffset CreatedAt,
    [property: JsonPropertyName("provider_status")] string? ProviderStatus);
