using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;

namespace Bursar.Gateway.Batch;

/// <summary>The providers' batch and file objects as the caller sees them through Bursar: Bursar's ids in place of the provider's.</summary>
public static class BatchObjects
{
    /// <summary>The metadata key Bursar adds to an OpenAI batch (its own id), to find a batch whose submit a crash interrupted.</summary>
    public const string MetadataKey = "bursar_batch_id";

    public static string NewBatchId(string dialect, DateTimeOffset now) =>
        (dialect == "anthropic" ? "msgbatch_bsr" : "batch_bsr") + Guid.CreateVersion7(now).ToString("N");

    public static string NewFileId(DateTimeOffset now) => "file-bsr" + Guid.CreateVersion7(now).ToString("N");

    /// <summary>Bursar's id of a file the provider made (a batch's output or error file): the same every time it is seen.</summary>
    public static string ResultFileId(string deployment, string upstreamId) =>
        "file-bsr" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(deployment + "\n" + upstreamId)))[..32];

    /// <summary>Whether the provider's object (in the deployment's dialect, <paramref name="upstream"/>) says the batch has ended.</summary>
    public static bool IsEnded(Bursar.Providers.Dialects.Dialect upstream, JsonObject o) => upstream == Bursar.Providers.Dialects.Dialect.Anthropic
        ? Str(o, "processing_status") == "ended"
        : Str(o, "status") is "completed" or "expired" or "cancelled" or "failed";

    public static string? Str(JsonNode? node, string name) =>
        node is JsonObject o && o[name] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    /// <summary>
    /// The provider's batch object with Bursar's ids: the batch's, the input file's, the result files' (<paramref name="resultFile"/> maps and records
    /// them); Bursar's metadata key removed; an Anthropic <c>results_url</c> made relative (the endpoint answers it with the caller's host).
    /// A deployment of the other dialect (<paramref name="upstreamDialect"/>) has its object translated to the caller's (<see cref="CrossDialectBatches"/>).
    /// </summary>
    public static JsonObject Rewrite(BatchState b, Bursar.Providers.Dialects.Dialect upstreamDialect, JsonObject upstream, Func<string, string> resultFile)
    {
        if (CrossDialectBatches.IsCross(b, upstreamDialect))
            return upstreamDialect == Bursar.Providers.Dialects.Dialect.Anthropic ? CrossDialectBatches.ToOpenAIBatch(b, upstream, resultFile) : CrossDialectBatches.ToAnthropicBatch(b, upstream);
        var o = (JsonObject)upstream.DeepClone();
        o["id"] = b.Id;
        if (b.Dialect == "anthropic")
        {
            if (Str(o, "results_url") is not null) o["results_url"] = $"/v1/messages/batches/{b.Id}/results";
            return o;
        }
        if (b.InputFileId is not null) o["input_file_id"] = b.InputFileId;
        foreach (var field in new[] { "output_file_id", "error_file_id" })
            if (Str(o, field) is { } up) o[field] = resultFile(up);
        if (o["metadata"] is JsonObject md)
        {
            md.Remove(MetadataKey);
            if (md.Count == 0) o["metadata"] = null;
        }
        return o;
    }

    /// <summary>The stored object for the caller: an Anthropic results URL on the caller's own host.</summary>
    public static string ForCaller(string stored, string origin) =>
        stored.Replace("\"results_url\":\"/v1/", $"\"results_url\":\"{origin}/v1/", StringComparison.Ordinal);
}
