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

    /// <summary>A lever stage's refusal in the gateway's error vocabulary.</summary>
    public static ProviderError From(Bursar.Core.Pipeline.LeverRefusal r) => new(r.Status, r.Message, r.Blame switch
    {
        Bursar.Core.Pipeline.Blame.Policy => ErrorSource.Policy,
        Bursar.Core.Pipeline.Blame.Upstream => ErrorSource.Upstream,
        Bursar.Core.Pipeline.Blame.Gateway => ErrorSource.Gateway,
        _ => ErrorSource.Caller,
    })
    { Param = r.Param, Code = r.Code, TypeOverride = r.Type, RetryAfterSeconds = r.RetryAfterSeconds };

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

    /// <summary>Error types Bursar itself answers with (policy refusals); they keep their name in both dialects.</summary>
    public static bool IsBursarType(string? type) => type is "budget_exceeded" or "run_limit_exceeded" or "unpriced_model";

    private enum Kind { InvalidRequest, Authentication, Quota, Permission, NotFound, TooLarge, RateLimit, Api, Timeout, Overloaded }

    /// <summary>What the error means, from its type and code in either vocabulary, then from its status.</summary>
    private Kind Classify()
    {
        var kind = (TypeOverride, Code) switch
        {
            (_, "invalid_api_key") or ("authentication_error", _) => (Kind?)Kind.Authentication,
            ("insufficient_quota" or "billing_error", _) or (_, "insufficient_quota") => Kind.Quota,
            ("permission_error" or "request_forbidden", _) => Kind.Permission,
            ("not_found_error", _) or (_, "model_not_found") => Kind.NotFound,
            ("request_too_large", _) => Kind.TooLarge,
            ("rate_limit_error" or "rate_limit_exceeded" or "requests" or "tokens", _) or (_, "rate_limit_exceeded") => Kind.RateLimit,
            ("overloaded_error", _) => Kind.Overloaded,
            ("timeout_error", _) => Kind.Timeout,
            ("api_error" or "server_error", _) => Status is 503 or 529 ? Kind.Overloaded : Kind.Api, // OpenAI says "overloaded" with a 503 server_error
            _ => null,
        };
        return kind ?? Status switch
        {
            401 => Kind.Authentication,
            402 => Kind.Quota,
            403 => Kind.Permission,
            404 => Kind.NotFound,
            413 => Kind.TooLarge,
            429 => Kind.RateLimit,
            503 or 529 => Kind.Overloaded,
            504 => Kind.Timeout,
            >= 500 => Kind.Api,
            _ => Kind.InvalidRequest,
        };
    }

    /// <summary>
    /// The same error in the caller's vocabulary: an upstream error of the other dialect (Anthropic <c>overloaded_error</c>, OpenAI
    /// <c>rate_limit_exceeded</c>, ...) gets the type, code and status the caller's SDK expects for that meaning. The message is kept;
    /// Bursar's own policy types (<see cref="IsBursarType"/>) are never renamed.
    /// </summary>
    public ProviderError ForDialect(Dialect target)
    {
        if (IsBursarType(TypeOverride)) return this;
        var kind = Classify();
        if (target == Dialect.Anthropic)
        {
            var (status, type) = kind switch
            {
                Kind.Authentication => (401, "authentication_error"),
                Kind.Quota => (402, "billing_error"),
                Kind.Permission => (403, "permission_error"),
                Kind.NotFound => (404, "not_found_error"),
                Kind.TooLarge => (413, "request_too_large"),
                Kind.RateLimit => (429, "rate_limit_error"),
                Kind.Overloaded => (529, "overloaded_error"),
                Kind.Timeout => (504, "timeout_error"),
                Kind.Api => (Status >= 500 ? Status : 500, "api_error"),
                _ => (Status is >= 400 and < 500 ? Status : 400, "invalid_request_error"),
            };
            return this with { Status = status, TypeOverride = type, Code = null };
        }
        var (s, t, c) = kind switch
        {
            Kind.Authentication => (401, "invalid_request_error", "invalid_api_key"),
            Kind.Quota => (429, "insufficient_quota", "insufficient_quota"),
            Kind.Permission => (403, "permission_error", (string?)null),
            Kind.NotFound => (404, "invalid_request_error", "model_not_found"),
            Kind.TooLarge => (413, "invalid_request_error", null),
            Kind.RateLimit => (429, "rate_limit_exceeded", "rate_limit_exceeded"),
            Kind.Overloaded => (503, "server_error", null),
            Kind.Timeout => (504, "server_error", null),
            Kind.Api => (Status >= 500 && Status != 529 ? Status : 500, "server_error", null),
            _ => (Status is >= 400 and < 500 ? Status : 400, "invalid_request_error", Code),
        };
        return this with { Status = s, TypeOverride = t, Code = c, Param = kind == Kind.NotFound ? Param ?? "model" : Param };
    }

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
