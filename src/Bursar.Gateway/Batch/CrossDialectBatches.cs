using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Providers.Dialects;
using Bursar.Providers.Translation;

namespace Bursar.Gateway.Batch;

/// <summary>
/// Batches whose caller and deployment speak different dialects: an OpenAI batch file whose lines name Claude models goes
/// upstream as one Anthropic message batch, an Anthropic message batch naming GPT models as one OpenAI file and batch. Every
/// request and every answer goes through the synchronous path's translators (<see cref="RequestTranslator"/>,
/// <see cref="ResponseTranslator"/>, <see cref="ProviderError.ForDialect"/>), line by line and streamed; only the batch
/// objects and result-line envelopes, which the synchronous path has none of, are mapped here.
/// </summary>
public static class CrossDialectBatches
{
    /// <summary>The upstream id of an input file Bursar keeps itself (an OpenAI file for a Claude batch: Anthropic has no files API).</summary>
    public const string LocalPrefix = "local:";

    /// <summary>Suffixes of the upstream id of the output and error files of an OpenAI-dialect batch an Anthropic deployment holds.</summary>
    public const string OutputSuffix = "#output", ErrorSuffix = "#errors";

    public static bool IsCross(BatchState b, Dialect upstream) => Caller(b) != upstream;

    public static Dialect Caller(BatchState b) => b.Dialect == "anthropic" ? Dialect.Anthropic : Dialect.OpenAI;

    // ------------------------------------------------------------------ requests

    /// <summary>
    /// Writes the Anthropic <c>{"requests":[…]}</c> body of an OpenAI input file (already checked line by line at upload): each
    /// line's body translated as a synchronous call's would be.
    /// </summary>
    public static async Task WriteAnthropicRequestsAsync(string openAIInput, Stream output, CancellationToken ct)
    {
        await using var w = new Utf8JsonWriter(output);
        w.WriteStartObject();
        w.WriteStartArray("requests");
        using var reader = new StreamReader(openAIInput, Encoding.UTF8);
        while (await reader.ReadLineAsync(ct).ConfigureAwait(false) is { } text)
        {
            if (string.IsNullOrWhiteSpace(text)) continue;
            var line = (JsonObject)JsonNode.Parse(text)!;
            w.WriteStartObject();
            w.WriteString("custom_id", line["custom_id"]!.GetValue<string>());
            w.WritePropertyName("params");
            RequestTranslator.OpenAIToAnthropic((JsonObject)line["body"]!).WriteTo(w);
            w.WriteEndObject();
            if (w.BytesPending > 64 * 1024) await w.FlushAsync(ct).ConfigureAwait(false);
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>Writes the OpenAI JSONL input file of an Anthropic batch body (already checked request by request).</summary>
    public static async Task WriteOpenAIInputAsync(ReadOnlyMemory<byte> anthropicBody, Stream output, CancellationToken ct)
    {
        var requests = (JsonArray)JsonNode.Parse(anthropicBody.Span)!["requests"]!;
        foreach (var r in requests)
        {
            var line = new JsonObject
            {
                ["custom_id"] = r!["custom_id"]!.GetValue<string>(), ["method"] = "POST", ["url"] = BatchInput.ChatEndpoint,
                ["body"] = RequestTranslator.AnthropicToOpenAI((JsonObject)r["params"]!),
            };
            await output.WriteAsync(Encoding.UTF8.GetBytes(line.ToJsonString() + "\n"), ct).ConfigureAwait(false);
        }
    }

    // ------------------------------------------------------------------ batch objects

    /// <summary>What an OpenAI caller sees of its batch before the provider has answered the submit.</summary>
    public static JsonObject SubmittingOpenAIBatch(BatchState b, JsonNode? metadata) => new()
    {
        ["id"] = b.Id, ["object"] = "batch", ["endpoint"] = BatchInput.ChatEndpoint, ["errors"] = null, ["input_file_id"] = b.InputFileId,
        ["completion_window"] = "24h", ["status"] = "validating", ["output_file_id"] = null, ["error_file_id"] = null,
        ["created_at"] = b.CreatedAt.ToUnixTimeSeconds(), ["in_progress_at"] = null, ["expires_at"] = b.CreatedAt.AddHours(24).ToUnixTimeSeconds(),
        ["finalizing_at"] = null, ["completed_at"] = null, ["failed_at"] = null, ["expired_at"] = null, ["cancelling_at"] = null, ["cancelled_at"] = null,
        ["request_counts"] = new JsonObject { ["total"] = b.Lines, ["completed"] = 0, ["failed"] = 0 },
        ["metadata"] = metadata?.DeepClone(),
    };

    /// <summary>
    /// An Anthropic message batch as an OpenAI batch object: <c>ended</c> is <c>completed</c> (or <c>cancelled</c> after a cancel,
    /// <c>expired</c> when every request expired), succeeded requests are <c>completed</c>, the rest <c>failed</c>; the output
    /// and error files are Bursar's, made from the message batch's results (<paramref name="resultFile"/>). The caller's metadata
    /// is kept from the object stored before (Anthropic batches carry none).
    /// </summary>
    public static JsonObject ToOpenAIBatch(BatchState b, JsonObject a, Func<string, string> resultFile)
    {
        var previous = b.Object is null ? null : JsonNode.Parse(b.Object) as JsonObject;
        var status = BatchObjects.Str(a, "processing_status");
        var counts = a["request_counts"];
        long Count(string name) => counts?[name] is JsonValue v && v.TryGetValue<long>(out var n) ? n : 0;
        long succeeded = Count("succeeded"), errored = Count("errored"), canceled = Count("canceled"), expired = Count("expired");
        var total = Math.Max(b.Lines, Count("processing") + succeeded + errored + canceled + expired);
        var ended = status == "ended";
        var cancelAt = Unix(a["cancel_initiated_at"]);
        var endedAt = Unix(a["ended_at"]);
        var openaiStatus = status switch
        {
            "canceling" => "cancelling",
            "ended" when cancelAt is not null => "cancelled",
            "ended" when expired == total && total > 0 => "expired",
            "ended" => "completed",
            _ => "in_progress",
        };
        var upstreamId = BatchObjects.Str(a, "id")!;
        return new JsonObject
        {
            ["id"] = b.Id, ["object"] = "batch", ["endpoint"] = BatchInput.ChatEndpoint, ["errors"] = null, ["input_file_id"] = b.InputFileId,
            ["completion_window"] = "24h", ["status"] = openaiStatus,
            ["output_file_id"] = ended && succeeded > 0 ? resultFile(upstreamId + OutputSuffix) : null,
            ["error_file_id"] = ended && errored + canceled + expired > 0 ? resultFile(upstreamId + ErrorSuffix) : null,
            ["created_at"] = Unix(a["created_at"]) ?? b.CreatedAt.ToUnixTimeSeconds(), ["in_progress_at"] = Unix(a["created_at"]),
            ["expires_at"] = Unix(a["expires_at"]), ["finalizing_at"] = null,
            ["completed_at"] = openaiStatus == "completed" ? endedAt : null, ["failed_at"] = null,
            ["expired_at"] = openaiStatus == "expired" ? endedAt : null, ["cancelling_at"] = cancelAt,
            ["cancelled_at"] = openaiStatus == "cancelled" ? endedAt : null,
            ["request_counts"] = new JsonObject { ["total"] = total, ["completed"] = succeeded, ["failed"] = ended ? errored + canceled + expired : 0 },
            ["metadata"] = previous?["metadata"]?.DeepClone(),
        };
    }

    /// <summary>
    /// An OpenAI batch as an Anthropic message batch: a finished status is <c>ended</c>, completed requests are <c>succeeded</c>
    /// and the rest counted by the batch's end (<c>canceled</c> after a cancel, <c>expired</c> after expiry, else <c>errored</c>).
    /// </summary>
    public static JsonObject ToAnthropicBatch(BatchState b, JsonObject o)
    {
        var status = BatchObjects.Str(o, "status");
        var rc = o["request_counts"];
        long Count(string name) => rc?[name] is JsonValue v && v.TryGetValue<long>(out var n) ? n : 0;
        var total = Math.Max(b.Lines, Count("total"));
        var completed = Count("completed");
        var ended = status is "completed" or "expired" or "cancelled" or "failed";
        var rest = total - completed;
        var endedAt = Iso(o["completed_at"]) ?? Iso(o["expired_at"]) ?? Iso(o["cancelled_at"]) ?? Iso(o["failed_at"]);
        return new JsonObject
        {
            ["id"] = b.Id, ["type"] = "message_batch",
            ["processing_status"] = ended ? "ended" : status == "cancelling" ? "canceling" : "in_progress",
            ["request_counts"] = new JsonObject
            {
                ["processing"] = ended ? 0 : total, ["succeeded"] = ended ? completed : 0,
                ["errored"] = ended && status is "completed" or "failed" ? rest : 0,
                ["canceled"] = ended && status == "cancelled" ? rest : 0, ["expired"] = ended && status == "expired" ? rest : 0,
            },
            ["created_at"] = Iso(o["created_at"]) ?? b.CreatedAt.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture),
            ["expires_at"] = Iso(o["expires_at"]), ["ended_at"] = ended ? endedAt : null, ["cancel_initiated_at"] = Iso(o["cancelling_at"]),
            ["archived_at"] = null, ["results_url"] = ended ? $"/v1/messages/batches/{b.Id}/results" : null,
        };
    }

    private static long? Unix(JsonNode? n) =>
        n is JsonValue v && v.TryGetValue<string>(out var s) && DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t) ? t.ToUnixTimeSeconds() : null;

    private static string? Iso(JsonNode? n) => n is JsonValue v && v.TryGetValue<long>(out var s) && s > 0
        ? DateTimeOffset.FromUnixTimeSeconds(s).UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture) : null;

    // ------------------------------------------------------------------ result lines

    /// <summary>
    /// One Anthropic result line as the OpenAI batch output line the caller expects, or null when it belongs to the other file
    /// (<paramref name="errors"/>: the error file takes errored, canceled and expired requests, the output file the succeeded ones).
    /// </summary>
    public static string? ToOpenAILine(string anthropicLine, bool errors, long created)
    {
        if (JsonNode.Parse(anthropicLine) is not JsonObject r || BatchObjects.Str(r, "custom_id") is not { } customId) return null;
        var result = r["result"];
        var type = BatchObjects.Str(result, "type");
        if ((type == "succeeded") == errors) return null;
        var line = new JsonObject { ["id"] = "batch_req_" + Hash(customId), ["custom_id"] = customId };
        switch (type)
        {
            case "succeeded" when result!["message"] is JsonObject m:
                line["response"] = new JsonObject { ["status_code"] = 200, ["request_id"] = BatchObjects.Str(m, "id"), ["body"] = ResponseTranslator.AnthropicToOpenAI(m, created) };
                line["error"] = null;
                break;
            case "canceled":
                line["response"] = null;
                line["error"] = new JsonObject { ["code"] = "batch_cancelled", ["message"] = "This request was cancelled before it was executed." };
                break;
            case "expired":
                line["response"] = null;
                line["error"] = new JsonObject { ["code"] = "batch_expired", ["message"] = "This request could not be executed before the completion window expired." };
                break;
            default:
                var raw = Encoding.UTF8.GetBytes(result?["error"]?.ToJsonString() ?? "{}");
                var type2 = BatchObjects.Str(result?["error"]?["error"], "type");
                var status = type2 switch { "invalid_request_error" => 400, "authentication_error" => 401, "permission_error" => 403, "not_found_error" => 404, "rate_limit_error" => 429, "overloaded_error" => 529, _ => 500 };
                var error = (ProviderError.TryParse(status, raw) ?? new ProviderError(500, $"The provider's result type '{type}' is not one Bursar reads.", ErrorSource.Upstream)).ForDialect(Dialect.OpenAI);
                line["response"] = new JsonObject { ["status_code"] = error.Status, ["request_id"] = null, ["body"] = JsonNode.Parse(error.ToJson(Dialect.OpenAI)) };
                line["error"] = null;
                break;
        }
        return line.ToJsonString();
    }

    /// <summary>One OpenAI batch output (or error) line as the Anthropic result line the caller expects.</summary>
    public static string? ToAnthropicLine(string openAILine)
    {
        if (JsonNode.Parse(openAILine) is not JsonObject r || BatchObjects.Str(r, "custom_id") is not { } customId) return null;
        JsonObject result;
        if (r["response"] is JsonObject resp)
        {
            var status = resp["status_code"] is JsonValue sv && sv.TryGetValue<int>(out var s) ? s : 500;
            if (status == 200 && resp["body"] is JsonObject body)
            {
                result = new JsonObject { ["type"] = "succeeded", ["message"] = ResponseTranslator.OpenAIToAnthropic(body) };
            }
            else
            {
                var error = (ProviderError.TryParse(status, Encoding.UTF8.GetBytes(resp["body"]?.ToJsonString() ?? "{}"))
                    ?? new ProviderError(status, $"The provider answered {status} for this request.", ErrorSource.Upstream)).ForDialect(Dialect.Anthropic);
                result = new JsonObject { ["type"] = "errored", ["error"] = JsonNode.Parse(error.ToJson(Dialect.Anthropic)) };
            }
        }
        else
        {
            result = BatchObjects.Str(r["error"], "code") switch
            {
                "batch_expired" => new JsonObject { ["type"] = "expired" },
                "batch_cancelled" => new JsonObject { ["type"] = "canceled" },
                _ => new JsonObject
                {
                    ["type"] = "errored",
                    ["error"] = JsonNode.Parse(new ProviderError(500, BatchObjects.Str(r["error"], "message") ?? "The provider gave no answer for this request.", ErrorSource.Upstream).ToJson(Dialect.Anthropic)),
                },
            };
        }
        return new JsonObject { ["custom_id"] = customId, ["result"] = result }.ToJsonString();
    }

    /// <summary>Streams <paramref name="source"/>'s lines through <paramref name="translate"/> to <paramref name="output"/> (a line it drops is skipped).</summary>
    public static async Task TranslateLinesAsync(Stream source, Stream output, Func<string, string?> translate, CancellationToken ct)
    {
        using var reader = new StreamReader(source, Encoding.UTF8);
        while (await reader.ReadLineAsync(ct).ConfigureAwait(false) is { } text)
        {
            if (string.IsNullOrWhiteSpace(text)) continue;
            string? translated;
            try
            {
                translated = translate(text);
            }
            catch (JsonException)
            {
                continue; // not a result line
            }
            if (translated is null) continue;
            await output.WriteAsync(Encoding.UTF8.GetBytes(translated + "\n"), ct).ConfigureAwait(false);
        }
    }

    private static string Hash(string s) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(s)))[..24];
}
