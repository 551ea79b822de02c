"""The properties of deploy/template.yaml that cfn-lint cannot know we rely on.

cfn-lint checks that the template is valid CloudFormation; this checks that it still does what
deploy/README.md promises: the ALB ingress is off by default and all of it hangs on one
condition, only the inbound paths reach it, its health check is the router's /healthz, its
timeouts leave room for a 30 MB post, its task role holds exactly the permissions the router
uses, the bucket aborts incomplete multipart uploads, and MAILROOM_ROUTES reaches both the
function and the ingress. Run with the pinned cfn-lint's Python (scripts/test.sh does):

    python deploy/check_template.py deploy/template.yaml
"""

import sys

from cfnlint.decode import decode


def main(path):
    template, problems = decode(path)
    if problems:
        sys.exit(f"{path}: cannot parse: {problems}")
    params = template["Parameters"]
    res = template["Resources"]
    passed, failures = [], []

    def check(what, ok):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        (passed if ok else failures).append(what)

    ingress = {name: r for name, r in res.items() if name.startswith("Ingress")}
    check("the ingress is off by default", params["InboundIngress"]["Default"] == "api-gateway")
    check(
        "every Ingress* resource hangs on UseAlbIngress",
        bool(ingress) and all(r.get("Condition") == "UseAlbIngress" for r in ingress.values()),
    )
    check(
        "Rules refuse alb-fargate without certificate, VPC, subnets and image",
        {"IngressCertificateArn", "IngressVpcId", "IngressPublicSubnetIds", "IngressTaskSubnetIds", "IngressImage"}
        <= {
            name
            for a in template["Rules"]["AlbIngressSettings"]["Assertions"]
            for name in refs(a["Assert"])
        },
    )

    listener = res["IngressListener"]["Properties"]
    check("the listener is HTTPS on 443", (listener["Protocol"], listener["Port"]) == ("HTTPS", 443))
    check(
        "the listener's certificate is IngressCertificateArn",
        listener["Certificates"] == [{"CertificateArn": {"Ref": "IngressCertificateArn"}}],
    )
    check(
        "anything but the inbound paths is a fixed 404 at the ALB",
        listener["DefaultActions"][0]["Type"] == "fixed-response"
        and listener["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "404",
    )
    rules = [r["Properties"] for r in res.values() if r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule"]
    check(
        "one rule forwards exactly /sendgrid/inbound and /sendgrid/inbound/*",
        len(rules) == 1
        and sorted(rules[0]["Conditions"][0]["PathPatternConfig"]["Values"])
        == ["/sendgrid/inbound", "/sendgrid/inbound/*"]
        and rules[0]["Actions"] == [{"Type": "forward", "TargetGroupArn": {"Ref": "IngressTargetGroup"}}],
    )

    group = res["IngressTargetGroup"]["Properties"]
    group_attrs = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}
    check("the target group's health check is GET /healthz", group["HealthCheckPath"] == "/healthz")
    alb_attrs = {a["Key"]: a["Value"] for a in res["IngressLoadBalancer"]["Properties"]["LoadBalancerAttributes"]}
    idle = params["IngressIdleTimeoutSecs"]
    check(
        "the ALB idle timeout is IngressIdleTimeoutSecs, default and minimum at least 60 s, default 300 s",
        alb_attrs["idle_timeout.timeout_seconds"] == {"Ref": "IngressIdleTimeoutSecs"}
        and idle["Default"] >= 300
        and idle["MinValue"] >= 60,
    )
    container = res["IngressTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    check(
        "open posts get the deregistration delay, then StopTimeout (Fargate allows at most 120 s)",
        int(group_attrs["deregistration_delay.timeout_seconds"]) >= 60 and 30 <= container["StopTimeout"] <= 120,
    )

    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    check("the container listens on the target group's port", env["MAILROOM_LISTEN"] == f"0.0.0.0:{group['Port']}"
          and container["PortMappings"][0]["ContainerPort"] == group["Port"])
    check(
        "the container gets the inbound queue, bucket, size limit and routes",
        env.get("MAILROOM_INBOUND_QUEUE_URL") == {"Ref": "InboundQueue"}
        and env.get("MAILROOM_LARGE_BODY_BUCKET") == {"Ref": "LargeBodyBucket"}
        and env.get("MAILROOM_MAX_INBOUND_BYTES") == {"Ref": "IngressMaxInboundBytes"}
        and env.get("MAILROOM_ROUTES") == {"Ref": "Routes"},
    )
    check("a 30 MB post fits the default MAILROOM_MAX_INBOUND_BYTES", params["IngressMaxInboundBytes"]["Default"] > 30_000_000)

    statements = [
        s
        for policy in res["IngressTaskRole"]["Properties"]["Policies"]
        for s in unwrap_if(policy["PolicyDocument"]["Statement"])
    ]
    actions = {a for s in statements for a in listify(s["Action"])}
    check(
        "the task role holds exactly sqs:SendMessage, s3:PutObject, s3:AbortMultipartUpload",
        actions == {"sqs:SendMessage", "s3:PutObject", "s3:AbortMultipartUpload"}
        and all(s["Effect"] == "Allow" for s in statements),
    )
    s3_resources = [s["Resource"] for s in statements if any(a.startswith("s3:") for a in listify(s["Action"]))]
    check(
        "its S3 permissions are on <bucket>/mailroom/* only",
        s3_resources == [{"Fn::Sub": "${LargeBodyBucket.Arn}/mailroom/*"}],
    )
    check(
        "its SQS permission is on the inbound queue (and RouteQueueArns), not the events queue",
        all(
            s["Resource"] in ({"Fn::GetAtt": ["InboundQueue", "Arn"]}, {"Ref": "RouteQueueArns"})
            for s in statements
            if "sqs:SendMessage" in listify(s["Action"])
        ),
    )

    lifecycle = res["LargeBodyBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    check(
        "a bucket-wide rule aborts incomplete multipart uploads",
        any(
            r.get("Status") == "Enabled"
            and "AbortIncompleteMultipartUpload" in r
            and not ({"Prefix", "TagFilters", "Filter"} & r.keys())
            for r in lifecycle
        ),
    )

    function = res["RouterFunction"]["Properties"]
    check(
        "the function gets MAILROOM_ROUTES from Routes (default empty)",
        function["Environment"]["Variables"].get("MAILROOM_ROUTES") == {"Ref": "Routes"}
        and params["Routes"]["Default"] == "",
    )
    paths = {e["Properties"]["Path"] for e in function["Events"].values()}
    check(
        "the API has the named routes",
        {"/sendgrid/events/{name}", "/sendgrid/inbound/{name}", "/sendgrid/events", "/sendgrid/inbound"} <= paths,
    )

    print(f"{len(passed)} passed, {len(failures)} failed")
    if failures:
        sys.exit(1)


def listify(value):
    return value if isinstance(value, list) else [value]


def unwrap_if(statements):
    """Statements, with `Fn::If [cond, statement, AWS::NoValue]` taken as its statement."""
    out = []
    for s in statements:
        if isinstance(s, dict) and "Fn::If" in s:
            out.extend(x for x in s["Fn::If"][1:] if x != {"Ref": "AWS::NoValue"})
        else:
            out.append(s)
    return out


def refs(node):
    """Every name a node `Ref`s, however deep."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "deploy/template.yaml")
