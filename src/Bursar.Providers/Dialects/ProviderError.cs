using System.Text.Json;

namespace Bursar.Providers.Dialects;

/// <summary>Who is to blame for an error: the caller's request, Bursar's policy, or the upstream provider.</summary>
public enum ErrorSource { Caller, Policy, Upstream, Gateway }

/// <summary>
/// An error as a value, in Bursar's canonical form. <see cref="Write"/> renders it in either dialect's own shape:
/// OpenAI <c>{"error":{"message","type","param","code"}}</c>, Anthropic <c>{"type":"error","error":{"type","message"}}</c>.
/// </summary>
public sealed record ProviderError(int Status, string Message, ErrorSource Source = ErrorSource.Caller)
{
    /// <summary>Field the error is about (OpenAI <c>param</c>).</summary>
    public string? Param { get; init; }
    /// <summary>OpenAI <c>code</c>, e.g. <c>model_not_found</c>, <c>invalid_api_key</c>.</summary>
    public string? Code { get; init; }
    /// <summary>Overrides the type derived from the status (e.g. <c>budget_exceeded</c>).</summary>
    public string? TypeOverride { get; init; }
    /// <summary>Seconds for a <c>retry-after</c> header.</summary>
    public int? RetryAfterSeconds { get; init; }

    public static ProviderError BadRequest(string message, string? param = null) => new(400, message) { Param = param };
    public static ProviderError Unauthorized(string message) => new(401, message) { Code = "invalid_api_key" };
    public static ProviderError Forbidden(string message) => new(403, message);
    public static ProviderError ModelNotFound(string model, string message) => new(404, message) { Param = "model", Code = "model_not_found" };
    public static ProviderError TooLarge(string message) => new(413, message);

    public string AnthropicType => TypeOverride ?? Status switch
    {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        >= 500 => "api_error",
        _ => "invalid_request_error",
    };

    public string OpenAIType => TypeOverride ?? Status switch
    {
        401 => "invalid_request_error",
        403 => "permission_error",
        404 => "invalid_request_error",
        413 => "invalid_request_error",
        429 => "rate_limit_exceeded",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    public byte[] ToJson(Dialect dialect, string? requestId = null)
    {
        using var ms = new MemoryStream(256);
        using (var w = new Utf8JsonWriter(ms))
        {
            Write(w, dialect, requestId);
        }
        return ms.ToArray();
    }

    public void Write(Utf8JsonWriter w, Dialect dialect, string? requestId = null)
    {
        w.WriteStartObject();
        if (dialect == Dialect.Anthropic)
        {
            w.WriteString("type", "error");
            w.WriteStartObject("error");
            w.WriteString("type", AnthropicType);
            w.WriteString("message", Message);
            w.WriteEndObject();
            if (requestId is not null) w.WriteString("request_id", requestId);
        }
        else
        {
            w.WriteStartObject("error");
            w.WriteString("message", Message);
            w.WriteString("type", OpenAIType);
            if (Param is null) w.WriteNull("param"); else w.WriteString("param", Param);
            if (Code is null) w.WriteNull("code"); else w.WriteString("code", Code);
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    /// <summary>Reads an error body from either dialect; null when the body is not a recognisable error.</summary>
    public static ProviderError? TryParse(int status, ReadOnlySpan<byte> body)
    {
        try
        {
            var r = new Utf8JsonReader(body);
            using var doc = JsonDocument.ParseValue(ref r);
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("error", out var e) || e.ValueKind != JsonValueKind.Object)
                return null;
            var msg = e.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString()! : "upstream error";
            var type = e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
            var code = e.TryGetProperty("code", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null;
            var param = e.TryGetProperty("param", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString() : null;
            return new ProviderError(status, msg, ErrorSource.Upstream) { TypeOverride = type, Code = code, Param = param };
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
